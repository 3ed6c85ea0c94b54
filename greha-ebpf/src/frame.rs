//! What the programs share about a frame: reading it from XDP or from tc,
//! and summing it in ones' complement.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_csum_diff, bpf_skb_load_bytes},
    programs::{TcContext, XdpContext},
};

/// A frame, from XDP or from tc; it starts at its Ethernet header in both.
pub trait Frame {
    /// The frame's length.
    fn len(&self) -> usize;
    /// The interface the frame arrived on.
    fn ifindex(&self) -> u32;
    /// `N` bytes at `off`; None if out of the frame.
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
    /// The ones' complement sum of bytes `start..end` (see [`ones_sum`]),
    /// `buf` as scratch space where the frame is read by copying.
    fn ones_sum(&self, buf: *mut Scratch, start: usize, end: usize, max: usize) -> Option<u64>;
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

    /// Headers by direct packet access: every frame on the interface is
    /// looked at, most are not VRRP, and a helper call each would cost.
    /// (And bpf_xdp_load_bytes is 5.18's: XDP reads nothing through it.)
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        direct(self.data(), self.data_end(), off)
    }

    #[inline(always)]
    fn ones_sum(&self, _buf: *mut Scratch, start: usize, end: usize, max: usize) -> Option<u64> {
        direct_sum(self.data(), self.data_end(), start, end, max)
    }
}

/// [`ones_sum`] by direct packet access, four bytes at a time: what XDP
/// sums (VRRP adverts, at most ~1 KiB) is in the first buffer, and kernels
/// before 5.18 have no helper to copy it out.
#[inline(always)]
fn direct_sum(data: usize, data_end: usize, start: usize, end: usize, max: usize) -> Option<u64> {
    if end < start || end - start > max {
        return None;
    }
    let mut sum: u64 = 0;
    let mut off = start;
    for _ in 0..max / 4 {
        if off + 4 > end {
            break;
        }
        // Summed as 32-bit words: the ones' complement sum of the 16-bit
        // words is the same after folding (2^16 is 1 modulo 0xffff).
        sum += u32::from_ne_bytes(direct::<4>(data, data_end, off)?) as u64;
        off += 4;
    }
    if end - off >= 2 {
        sum += u16::from_ne_bytes(direct::<2>(data, data_end, off)?) as u64;
        off += 2;
    }
    if end - off == 1 {
        // Padded with a zero byte after it (RFC 1071).
        let [b] = direct::<1>(data, data_end, off)?;
        sum += u16::from_ne_bytes([b, 0]) as u64;
    }
    // To 32 bits, as bpf_csum_diff leaves it.
    for _ in 0..2 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    Some(sum)
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

    /// Direct packet access from the linear part, the helper past it.
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        direct(self.data(), self.data_end(), off).or_else(|| {
            let mut b = [0u8; N];
            skb_load(self, off, b.as_mut_ptr(), N).then_some(b)
        })
    }

    #[inline(always)]
    fn ones_sum(&self, buf: *mut Scratch, start: usize, end: usize, max: usize) -> Option<u64> {
        ones_sum(self, buf, start, end, max)
    }
}

/// Copies `len` bytes at `off` into `buf`; false if out of the frame.
#[inline(always)]
pub fn skb_load(ctx: &TcContext, off: usize, buf: *mut u8, len: usize) -> bool {
    unsafe { bpf_skb_load_bytes(ctx.as_ptr(), off as u32, buf.cast(), len as u32) == 0 }
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
pub fn ones_sum(
    ctx: &TcContext,
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
        if !skb_load(ctx, off, buf.cast(), CHUNK) {
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
        // The length as 1 + (tail - 1) % CHUNK, which is tail here: a
        // verifier before ~6.8 learns nothing from `tail > 0` (a "not
        // equal" branch) and refuses a load that might be of 0 bytes; the
        // mask gives it 1..=CHUNK. black_box keeps LLVM from seeing that
        // it is tail and dropping the mask.
        let len = (core::hint::black_box(tail - 1) & (CHUNK - 1)) + 1;
        if !skb_load(ctx, off, buf.cast(), len) {
            return None;
        }
        // bpf_csum_diff wants whole words: pad with zeros, which is also
        // what RFC 1071 prescribes for an odd length. Volatile, or LLVM
        // makes a memset call of it that the verifier cannot bound; at
        // `len`, whose bounds the verifier knows from the mask (6.1 loses
        // tail's when LLVM spills it to the stack and reloads it).
        let bytes = buf.cast::<u8>();
        for k in 0..3 {
            unsafe { core::ptr::write_volatile(bytes.add(len + k), 0) };
        }
        let words = ((len + 3) & !3) as u32;
        sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf.cast(), words, sum as u32) };
        if sum < 0 {
            return None;
        }
    }
    Some((sum as u64) & 0xffff_ffff)
}
