//! What the programs share about a frame: reading it from XDP or from tc,
//! and summing it in ones' complement.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_csum_diff, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};

/// A frame, from XDP or from tc; it starts at its Ethernet header in both.
pub trait Frame {
    /// The frame's length.
    fn len(&self) -> usize;
    /// The interface the frame arrived on.
    fn ifindex(&self) -> u32;
    /// Copies `len` bytes at `off` into `buf`; false if out of the frame.
    fn load(&self, off: usize, buf: *mut u8, len: usize) -> bool;

    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.load(off, b.as_mut_ptr(), N).then_some(b)
    }
}

impl Frame for XdpContext {
    #[inline(always)]
    fn len(&self) -> usize {
        self.data_end() - self.data()
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        unsafe { (*self.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn load(&self, off: usize, buf: *mut u8, len: usize) -> bool {
        unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, buf.cast(), len as u32) == 0 }
    }

    /// Headers by direct packet access: every frame on the interface is
    /// looked at, most are not VRRP, and a helper call each would cost.
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        direct(self.data(), self.data_end(), off)
    }
}

#[inline(always)]
fn direct<const N: usize>(data: usize, data_end: usize, off: usize) -> Option<[u8; N]> {
    let start = data + off;
    if start + N > data_end {
        return None;
    }
    Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
}

impl Frame for TcContext {
    #[inline(always)]
    fn len(&self) -> usize {
        unsafe { (*self.skb.skb).len as usize }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // The device the frame is on: the tunnel interface after the
        // decapsulation's redirect.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn load(&self, off: usize, buf: *mut u8, len: usize) -> bool {
        unsafe { bpf_skb_load_bytes(self.as_ptr(), off as u32, buf.cast(), len as u32) == 0 }
    }

    /// Direct packet access from the linear part, the helper past it.
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        direct(self.data(), self.data_end(), off).or_else(|| {
            let mut b = [0u8; N];
            // The trait's load: TcContext has an inherent one of that name.
            Frame::load(self, off, b.as_mut_ptr(), N).then_some(b)
        })
    }
}

/// Bytes summed per bpf_csum_diff call.
pub const CHUNK: usize = 512;

/// A scratch buffer for [`ones_sum`]: a chunk, and four bytes of slack that
/// keep the zero padding after a tail in bounds without a check LLVM could
/// drop.
pub type Scratch = [u8; CHUNK + 4];

#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    for _ in 0..4 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The ones' complement sum (unfolded, 32 bits in the CPU's byte order) of
/// the frame's bytes `start..end`, chunk by chunk through `buf` with
/// bpf_csum_diff: a byte-wise loop over a jumbo frame is more than the
/// verifier will walk. None if a load fails or the range is longer than
/// `max` bytes (it cannot be summed, so nothing that needs it is accepted).
/// Fold the sum and compare it with all ones, which reads the same in
/// either byte order.
#[inline(always)]
pub fn ones_sum<F: Frame>(
    ctx: &F,
    buf: *mut Scratch,
    start: usize,
    end: usize,
    max: usize,
) -> Option<u64> {
    let mut sum: i64 = 0;
    let mut off = start;
    for _ in 0..max / CHUNK {
        if off + CHUNK > end {
            break;
        }
        if !ctx.load(off, buf.cast(), CHUNK) {
            return None;
        }
        sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                buf.cast(),
                CHUNK as u32,
                sum as u32,
            )
        };
        if sum < 0 {
            return None;
        }
        off += CHUNK;
    }
    // Opaque to LLVM, so the bounds below stay in the code for the
    // verifier (LLVM would otherwise prove them redundant and drop them).
    let tail = core::hint::black_box(end.checked_sub(off)?);
    if tail >= CHUNK {
        return None;
    }
    if tail > 0 {
        if !ctx.load(off, buf.cast(), tail) {
            return None;
        }
        // bpf_csum_diff wants whole words: pad with zeros, which is also
        // what RFC 1071 prescribes for an odd length. Volatile, or LLVM
        // makes a memset call of it that the verifier cannot bound.
        let bytes = buf.cast::<u8>();
        for k in 0..3 {
            unsafe { core::ptr::write_volatile(bytes.add(tail + k), 0) };
        }
        let words = ((tail + 3) & !3) as u32;
        sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf.cast(), words, sum as u32) };
        if sum < 0 {
            return None;
        }
    }
    Some((sum as u64) & 0xffff_ffff)
}
