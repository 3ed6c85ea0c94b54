//! Loads greha's eBPF object, attaches its programs, and takes them down
//! again. The one place that talks to aya for programs and links.
//!
//! All datapath state lives in bpffs under the pin directory: programs in
//! `progs-<object hash>/`, maps at the top, attachments as pinned bpf_links
//! in `links/` (on kernels without tcx, a tc attachment is a netlink
//! filter, which lives in the kernel by itself; `links/` then holds the
//! program under [`pins::netlink`] as the record that it is attached). The hash names the greha build that loaded them, so a new
//! binary never runs against an old one's programs and maps.
//! So tunnels outlive the command that created them (as `ip link add`
//! does), a daemon restart loses nothing, and every greha invocation sees
//! the same maps. Whoever comes first loads the object; later ones open
//! the pins. A lock on the directory serializes changes.
use std::{
    fmt,
    fs::{self, File},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::{
    Ebpf,
    maps::{Map, MapData, ProgramArray},
    programs::{
        Link as _, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkOrder, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle, qdisc_add_clsact},
        xdp::XdpLink,
    },
};
use greha_common::{TAIL_ENCAP_VLAN, TAIL_FRAGMENT_NEXT, TAIL_TOO_BIG, names};
use nix::fcntl::{Flock, FlockArg};
use tracing::{debug, info};

use crate::{bpffs, pins};

/// The eBPF object built by `build.rs` (empty when built with AYA_BUILD_SKIP).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/greha"));

const XDP_PROGRAMS: &[&str] = &[names::PROG_XDP, names::PROG_COUNT, names::PROG_VRRP];
const TC_PROGRAMS: &[&str] = &[
    names::PROG_GRE_ENCAP,
    names::PROG_GRE_DECAP,
    names::PROG_NOP,
    names::PROG_VRRP_TC,
    names::PROG_GRE_TOO_BIG,
    names::PROG_GRE_ENCAP_VLAN,
    names::PROG_GRE_FRAGMENT,
    names::PROG_GRE_FRAGMENT_NEXT,
];

/// Maps pinned with the programs of their build: they hold programs.
const PROGS_MAPS: &[&str] = &[names::MAP_GRE_TAILS];

/// The priority of greha's netlink tc filters (kernels without tcx): one
/// of greha's per interface and hook, told apart from others' by it and
/// by the program's handle.
const NETLINK_PRIORITY: u16 = 0x4752;

/// The handle of a program's netlink tc filter.
fn netlink_handle(prog: &str) -> TcHandle {
    let minor = TC_PROGRAMS.iter().position(|p| *p == prog).unwrap_or(0) as u16 + 1;
    TcHandle::new(0x4752, minor)
}

/// How an XDP program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver, before an skb exists.
    Native,
    /// In the core stack, for drivers without XDP support.
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// The pinned datapath, locked for the lifetime of this value.
pub struct Datapath {
    pin_dir: PathBuf,
    progs_dir: String,
    _lock: Flock<File>,
}

/// `progs-<FNV-1a of the embedded object>`: stable for one build, different
/// for any change to the programs or maps.
fn progs_dir_name() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in OBJECT {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    pins::progs_dir(h)
}

/// Where this build's program `name` is pinned under `pin_dir`.
pub fn pinned_prog(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(progs_dir_name()).join(name)
}

impl Datapath {
    /// Opens the datapath pinned under `pin_dir`, loading and pinning the
    /// object first if nothing is pinned there yet.
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let pin_dir = bpffs::prepare_pin_dir(pin_dir)?;
        let dir = File::open(&pin_dir)
            .with_context(|| format!("opening pin directory {}", pin_dir.display()))?;
        let lock = Flock::lock(dir, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", pin_dir.display()))?;
        let dp = Self {
            pin_dir,
            progs_dir: progs_dir_name(),
            _lock: lock,
        };
        if !dp.is_loaded() {
            dp.replace_other_version()?;
            if let Err(e) = dp.load() {
                // Nothing of a refused load stays: the maps and programs
                // pinned before the failure would otherwise outlive every
                // later stop (nothing attached, nothing to release).
                dp.remove_all_pins();
                return Err(e);
            }
        }
        Ok(dp)
    }

    fn prog_pin(&self, name: &str) -> PathBuf {
        self.pin_dir.join(&self.progs_dir).join(name)
    }

    /// The `progs-*` directories of other greha builds.
    fn other_versions(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.pin_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| pins::is_progs_dir(n) && n != self.progs_dir)
            })
            .collect()
    }

    /// Another greha build's datapath is replaced when nothing uses it, and
    /// refused while something does: its maps hold the running state.
    fn replace_other_version(&self) -> Result<()> {
        let others = self.other_versions();
        if others.is_empty() {
            return Ok(());
        }
        if self.attached_count() > 0 {
            bail!(
                "{} holds a datapath loaded by another greha build, with attachments in {}; \
                 remove its tunnels (greha tunnel del) or stop it with that build first",
                self.pin_dir.display(),
                self.links_dir().display()
            );
        }
        for dir in others {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the old datapath {}", dir.display()))?;
        }
        info!(pin_dir = %self.pin_dir.display(), "replaced the datapath of another greha build");
        Ok(())
    }

    fn attached_count(&self) -> usize {
        fs::read_dir(self.links_dir()).map_or(0, |d| d.count())
    }

    fn links_dir(&self) -> PathBuf {
        self.pin_dir.join(pins::LINKS_DIR)
    }

    /// Path of a pinned attachment, named by what it is for.
    pub fn link_pin(&self, name: &str) -> PathBuf {
        self.links_dir().join(name)
    }

    fn is_loaded(&self) -> bool {
        XDP_PROGRAMS
            .iter()
            .chain(TC_PROGRAMS)
            .all(|p| self.prog_pin(p).exists())
            && names::PINNED_MAPS
                .iter()
                .all(|m| self.pin_dir.join(m).exists())
            && PROGS_MAPS.iter().all(|m| self.prog_pin(m).exists())
    }

    fn load(&self) -> Result<()> {
        if OBJECT.is_empty() {
            bail!("this greha binary was built with AYA_BUILD_SKIP=1 and has no eBPF datapath");
        }
        // A partial pin set (an interrupted earlier load) is replaced whole.
        self.remove_pins()?;
        fs::create_dir_all(self.pin_dir.join(&self.progs_dir))?;
        fs::create_dir_all(self.links_dir())?;
        let mut ebpf = Ebpf::load(OBJECT).context(
            "loading the eBPF object failed (a kernel with BPF and BTF, Linux 5.10 or newer, is required)",
        )?;
        for &name in names::PINNED_MAPS {
            let path = self.pin_dir.join(name);
            ebpf.map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?
                .pin(&path)
                .with_context(|| format!("cannot pin map {name} at {}", path.display()))?;
        }
        for &name in XDP_PROGRAMS {
            let prog: &mut Xdp = program(&mut ebpf, name)?;
            prog.load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            prog.pin(self.prog_pin(name))
                .with_context(|| format!("pinning program {name}"))?;
        }
        for &name in TC_PROGRAMS {
            let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
            prog.load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            prog.pin(self.prog_pin(name))
                .with_context(|| format!("pinning program {name}"))?;
        }
        // The tail calls' table, pinned: its entries stay only while a
        // user reference (a pin) holds it, not the programs that use it.
        let map = names::MAP_GRE_TAILS;
        let mut tails: ProgramArray<MapData> = ebpf
            .take_map(map)
            .ok_or_else(|| anyhow!("map {map} missing from the eBPF object"))?
            .try_into()?;
        for (index, name) in [
            (TAIL_TOO_BIG, names::PROG_GRE_TOO_BIG),
            (TAIL_ENCAP_VLAN, names::PROG_GRE_ENCAP_VLAN),
            (TAIL_FRAGMENT_NEXT, names::PROG_GRE_FRAGMENT_NEXT),
        ] {
            let prog: &SchedClassifier = ebpf
                .program(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            tails
                .set(index, prog.fd()?, 0)
                .with_context(|| format!("filling {map} with {name}"))?;
        }
        tails
            .pin(self.prog_pin(map))
            .with_context(|| format!("pinning map {map}"))?;
        info!(pin_dir = %self.pin_dir.display(), "datapath loaded");
        Ok(())
    }

    /// A pinned map.
    pub fn map(&self, name: &str) -> Result<Map> {
        let path = self.pin_dir.join(name);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening map {}", path.display()))?;
        Ok(Map::from_map_data(data)?)
    }

    /// A pinned BPF_F_MMAPABLE array of `entries` elements of `T`, mapped
    /// into this process: reads and writes cost no system call.
    pub fn mmap_array<T: Copy>(&self, name: &str, entries: u32) -> Result<MmapArray<T>> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let path = self.pin_dir.join(name);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening map {}", path.display()))?;
        // The pinned map must be what T describes: BPF_F_MMAPABLE, with
        // elements of T's size (8-byte aligned in the kernel's layout).
        const BPF_F_MMAPABLE: u32 = 1 << 10;
        let info = data.info()?;
        let stride = size_of::<T>().next_multiple_of(8);
        ensure!(
            info.value_size() as usize == size_of::<T>()
                && size_of::<T>() == stride
                && align_of::<T>() <= 8
                && info.max_entries() >= entries
                && info.map_flags() & BPF_F_MMAPABLE != 0,
            "{}: value size {}, {} entries, flags {:#x}: not an mmap-able array of {entries} \
             {}-byte elements",
            path.display(),
            info.value_size(),
            info.max_entries(),
            info.map_flags(),
            size_of::<T>()
        );
        let len = (stride * entries as usize).next_multiple_of(page_size());
        // SAFETY: a shared mapping of the map's own memory, of the size the
        // kernel allows for it; unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mapping {} (is it BPF_F_MMAPABLE?)", path.display()));
        }
        Ok(MmapArray {
            ptr: ptr.cast(),
            entries,
            len,
        })
    }

    fn xdp_program(&self, name: &str) -> Result<Xdp> {
        Xdp::from_pin(
            self.prog_pin(name),
            aya_obj::programs::XdpAttachType::Interface,
        )
        .with_context(|| format!("opening pinned program {name}"))
    }

    /// Attaches XDP program `prog` to `ifindex`, natively if the driver
    /// can, in generic mode otherwise. The link detaches when dropped.
    pub fn attach_xdp(&self, prog: &str, ifindex: u32) -> Result<(XdpLink, AttachMode)> {
        let mut p = self.xdp_program(prog)?;
        let (id, mode) = match p.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(id) => (id, AttachMode::Native),
            Err(native) => {
                let id = p.attach_to_if_index(ifindex, XdpMode::Skb).with_context(|| {
                    format!("cannot attach {prog} to ifindex {ifindex} (native mode failed too: {native})")
                })?;
                (id, AttachMode::Generic)
            }
        };
        debug!(prog, ifindex, %mode, "attached");
        Ok((p.take_link(id)?, mode))
    }

    /// Attaches XDP program `prog` to `ifindex` and pins the link as
    /// `links/<pin>`, so the attachment outlives this process.
    pub fn attach_xdp_pinned(&self, prog: &str, ifindex: u32, pin: &str) -> Result<AttachMode> {
        let (link, mode) = self.attach_xdp(prog, ifindex)?;
        let fd: FdLink = link
            .try_into()
            .context("the kernel attached XDP without a bpf_link")?;
        fd.pin(self.link_pin(pin))
            .with_context(|| format!("pinning link {pin}"))?;
        Ok(mode)
    }

    /// Turns `flag` (`XDP_IF_*`) on for `ifindex`: greha_xdp runs there
    /// (attached and pinned as [`pins::xdp`] by the first user), and does
    /// what its flags say. Returns the attach mode if this call attached
    /// it; nothing changes on an error.
    pub fn xdp_use(&self, ifindex: u32, flag: u32) -> Result<Option<AttachMode>> {
        let mut flags: aya::maps::HashMap<_, u32, u32> = self.map(names::MAP_XDP_IF)?.try_into()?;
        let before = flags.get(&ifindex, 0).unwrap_or(0);
        flags
            .insert(ifindex, before | flag, 0)
            .context("writing GREHA_XDP_IF")?;
        let pin = pins::xdp(ifindex);
        if self.pinned_link_exists(&pin) {
            return Ok(None);
        }
        match self.attach_xdp_pinned(names::PROG_XDP, ifindex, &pin) {
            Ok(mode) => Ok(Some(mode)),
            Err(e) => {
                let _ = if before == 0 {
                    flags.remove(&ifindex)
                } else {
                    flags.insert(ifindex, before, 0)
                };
                Err(e)
            }
        }
    }

    /// Turns `flag` off for `ifindex`; greha_xdp is detached from it when
    /// no flag is left.
    pub fn xdp_release(&self, ifindex: u32, flag: u32) -> Result<()> {
        let mut flags: aya::maps::HashMap<_, u32, u32> = self.map(names::MAP_XDP_IF)?.try_into()?;
        let left = flags.get(&ifindex, 0).unwrap_or(0) & !flag;
        if left != 0 {
            flags
                .insert(ifindex, left, 0)
                .context("writing GREHA_XDP_IF")?;
            return Ok(());
        }
        self.detach_pinned(&pins::xdp(ifindex))?;
        let _ = flags.remove(&ifindex);
        Ok(())
    }

    /// Whether `flag` is on for `ifindex` with greha_xdp attached there.
    pub fn xdp_in_use(&self, ifindex: u32, flag: u32) -> bool {
        let on = self
            .map(names::MAP_XDP_IF)
            .ok()
            .and_then(|m| aya::maps::HashMap::<_, u32, u32>::try_from(m).ok())
            .and_then(|m| m.get(&ifindex, 0).ok())
            .is_some_and(|f| f & flag != 0);
        on && self.pinned_link_exists(&pins::xdp(ifindex))
    }

    /// Attaches tc program `prog` to `iface` (ingress or egress) and
    /// records it as `links/<pin>`: a tcx link pinned there, or, on a
    /// kernel before 6.6 (no tcx), a clsact filter added by netlink with
    /// greha's priority and the program's handle, recorded by the program
    /// pinned as `links/nl-<pin>`.
    pub fn attach_tc_pinned(
        &self,
        prog: &str,
        iface: &str,
        hook: TcAttachType,
        pin: &str,
    ) -> Result<()> {
        let mut p = SchedClassifier::from_pin(self.prog_pin(prog))
            .with_context(|| format!("opening pinned program {prog}"))?;
        match p.attach_with_options(iface, hook, TcAttachOptions::TcxOrder(LinkOrder::default())) {
            Ok(id) => {
                let fd: FdLink = p.take_link(id)?.try_into()?;
                fd.pin(self.link_pin(pin))
                    .with_context(|| format!("pinning link {pin}"))?;
            }
            Err(tcx) => {
                self.attach_tc_netlink(&mut p, prog, iface, hook, pin)
                    .with_context(|| {
                        format!("attaching {prog} to {iface} (tcx, Linux 6.6+: {tcx}; netlink tc)")
                    })?;
                debug!(prog, iface, "attached as a netlink tc filter (no tcx)");
            }
        }
        Ok(())
    }

    /// Attaches tc program `prog` to `iface`'s ingress for as long as the
    /// returned program lives (the daemon's own interfaces, gone with it):
    /// nothing is pinned.
    ///
    /// Takes the program pinned under `pin_dir` without opening the
    /// datapath, which would load one were it gone meanwhile (its last
    /// tunnel deleted) and so leave pins behind.
    pub fn attach_tc_ingress_owned(
        pin_dir: &Path,
        prog: &str,
        iface: &str,
    ) -> Result<SchedClassifier> {
        let mut p = SchedClassifier::from_pin(pinned_prog(pin_dir, prog))
            .with_context(|| format!("opening pinned program {prog}"))?;
        let ingress = TcAttachType::Ingress;
        if let Err(tcx) = p.attach_with_options(
            iface,
            ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ) {
            let _ = qdisc_add_clsact(iface);
            let options = TcAttachOptions::Netlink(NlOptions {
                priority: NETLINK_PRIORITY,
                handle: netlink_handle(prog),
                classid: None,
            });
            p.attach_with_options(iface, ingress, options)
                .with_context(|| format!("attaching {prog} to {iface} (tcx: {tcx}; netlink tc)"))?;
        }
        Ok(p)
    }

    fn attach_tc_netlink(
        &self,
        p: &mut SchedClassifier,
        prog: &str,
        iface: &str,
        hook: TcAttachType,
        pin: &str,
    ) -> Result<()> {
        // Already there on an interface that had a filter before.
        let _ = qdisc_add_clsact(iface);
        let options = || {
            TcAttachOptions::Netlink(NlOptions {
                priority: NETLINK_PRIORITY,
                handle: netlink_handle(prog),
                classid: None,
            })
        };
        let id = match p.attach_with_options(iface, hook, options()) {
            Ok(id) => id,
            Err(first) => {
                // greha's own filter of a run whose record is gone (a
                // removed pin directory): replaced.
                SchedClassifierLink::attached(
                    iface,
                    hook,
                    NETLINK_PRIORITY,
                    netlink_handle(prog),
                    None,
                )
                .ok()
                .and_then(|old| old.detach().ok())
                .ok_or(first)?;
                p.attach_with_options(iface, hook, options())?
            }
        };
        // The filter stays when this process ends, as a pinned link does.
        std::mem::forget(p.take_link(id)?);
        p.pin(self.link_pin(&pins::netlink(pin)))
            .with_context(|| format!("recording netlink filter {pin}"))?;
        Ok(())
    }

    /// Detaches what [`Self::attach_tc_pinned`] attached; nothing attached
    /// is not an error.
    pub fn detach_tc(&self, prog: &str, ifindex: u32, hook: TcAttachType, pin: &str) -> Result<()> {
        self.detach_pinned(pin)?;
        let record = self.link_pin(&pins::netlink(pin));
        if !record.exists() {
            return Ok(());
        }
        // With the interface gone, so is its filter.
        if let Ok(iface) = nix::net::if_::if_indextoname(ifindex) {
            let iface = iface.to_string_lossy();
            if let Ok(link) = SchedClassifierLink::attached(
                &iface,
                hook,
                NETLINK_PRIORITY,
                netlink_handle(prog),
                None,
            ) {
                link.detach()
                    .with_context(|| format!("detaching {prog} from {iface}"))?;
            }
        }
        bpffs::remove_pin(&record)?;
        debug!(pin, "detached (netlink tc filter)");
        Ok(())
    }

    pub fn pinned_link_exists(&self, pin: &str) -> bool {
        self.link_pin(pin).exists() || self.link_pin(&pins::netlink(pin)).exists()
    }

    /// Detaches a pinned attachment; a missing pin is not an error.
    pub fn detach_pinned(&self, pin: &str) -> Result<()> {
        let path = self.link_pin(pin);
        if !path.exists() {
            return Ok(());
        }
        let link = PinnedLink::from_pin(&path)
            .with_context(|| format!("opening link {}", path.display()))?;
        let fd = link
            .unpin()
            .with_context(|| format!("unpinning {}", path.display()))?;
        // With the pin gone, closing the last fd releases the link, which
        // detaches the program.
        drop(fd);
        debug!(pin, "detached");
        Ok(())
    }

    /// Removes every pin when nothing is attached any more, so a host with
    /// no tunnels and no daemon keeps no greha state. Returns whether it did.
    pub fn release_if_unused(self) -> Result<bool> {
        if self.attached_count() > 0 {
            return Ok(false);
        }
        self.remove_pins()?;
        let _ = fs::remove_dir(self.pin_dir.join(&self.progs_dir));
        let _ = fs::remove_dir(self.links_dir());
        bpffs::remove_dir_if_empty(&self.pin_dir);
        info!(pin_dir = %self.pin_dir.display(), "datapath unloaded");
        Ok(true)
    }

    /// Every pin of this build and the directories, as far as possible.
    fn remove_all_pins(&self) {
        for &name in names::PINNED_MAPS {
            let _ = bpffs::remove_pin(&self.pin_dir.join(name));
        }
        for &name in XDP_PROGRAMS.iter().chain(TC_PROGRAMS).chain(PROGS_MAPS) {
            let _ = bpffs::remove_pin(&self.prog_pin(name));
        }
        let _ = fs::remove_dir(self.pin_dir.join(&self.progs_dir));
        let _ = fs::remove_dir(self.links_dir());
        bpffs::remove_dir_if_empty(&self.pin_dir);
    }

    fn remove_pins(&self) -> Result<()> {
        for &name in names::PINNED_MAPS {
            bpffs::remove_pin(&self.pin_dir.join(name))?;
        }
        for &name in XDP_PROGRAMS.iter().chain(TC_PROGRAMS).chain(PROGS_MAPS) {
            bpffs::remove_pin(&self.prog_pin(name))?;
        }
        Ok(())
    }
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
    prog.try_into()
        .with_context(|| format!("program {name} has an unexpected type"))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A BPF array mapped into this process; the datapath writes it
/// concurrently, so elements are read and written with volatile accesses.
pub struct MmapArray<T> {
    ptr: *mut T,
    entries: u32,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, valid until drop; element
// accesses are volatile copies.
unsafe impl<T: Send> Send for MmapArray<T> {}

impl<T: Copy> MmapArray<T> {
    /// Element `i`, or None past the end.
    pub fn ptr(&self, i: u32) -> Option<*mut T> {
        // SAFETY: in bounds of the mapping.
        (i < self.entries).then(|| unsafe { self.ptr.add(i as usize) })
    }

    pub fn write(&self, i: u32, value: T) -> bool {
        match self.ptr(i) {
            // SAFETY: an aligned element inside the mapping.
            Some(p) => {
                unsafe { p.write_volatile(value) };
                true
            }
            None => false,
        }
    }
}

impl<T> Drop for MmapArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what mmap_array mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
