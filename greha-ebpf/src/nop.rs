//! `greha_nop`: returns TC_ACT_OK and does nothing else. The baseline that
//! `cargo xtask bench` measures the datapath programs against under
//! BPF_PROG_TEST_RUN; never attached.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

#[classifier]
pub fn greha_nop(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}
