use which::which;

/// bpf-linker is what turns the crate into a BPF object; cargo cannot see it
/// as a dependency, so rebuild when it changes (e.g. reinstalled for another
/// LLVM).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
