//! AVX-512 (BW + VBMI + VNNI) kernels for 8-bit fixed-point resampling, exact.
//!
//! Pillow accumulates `half + sum(v * w)` in i32 with 22-bit weights (torch's
//! uint8 kernel the same with at most 15-bit weights). Here each
//! weight is split as `w = hi * 2^11 + lo` (`lo` in 0..2048, `hi` fits i16), the
//! two sums `sum(v * hi)` and `sum(v * lo)` run as 16-bit pair products
//! (`vpdpwssd`: two taps per instruction, 16 outputs per register), and
//! `half + (hi_sum << 11) + lo_sum` is the same i32 Pillow computes, bit for
//! bit (wrapping arithmetic is exact modulo 2^32 either way); the sum is then
//! shifted by the weights' precision and clipped to 0..=255.
//!
//! - Horizontal pass ([`HPlan`]): no transpose. Each group of 16 output bytes
//!   (interleaved RGB) reads one 64-byte window of the source row; a byte
//!   permutation (`vpermb`) puts each lane's tap pair side by side as two
//!   16-bit values, with per-lane weights prepared once per size. Sizes whose
//!   windows do not fit 64 bytes (strong downscaling) have no plan: the caller
//!   uses the transposed row pass instead.
//! - Vertical pass ([`rows_pass`]): output row = weighted rows, 32 bytes per
//!   step, rows paired by a 16-bit unpack.

use std::arch::x86_64::*;

use super::pillow::Weights;

/// Most tap pairs of a horizontal plan (wider windows exceed 64 bytes anyway).
const MAX_PAIRS: usize = 8;

/// Bits of a weight kept in its low part.
const LO_BITS: u32 = 11;

/// True when the CPU runs the kernels of this module.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vbmi")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// `w` as (high, low) 16-bit parts, `w = high * 2^11 + low`; `None` when the
/// high part overflows i16 (never for normalized filter weights).
fn split(w: i32) -> Option<(i16, i16)> {
    let hi = i16::try_from(w >> LO_BITS).ok()?;
    Some((hi, (w & ((1 << LO_BITS) - 1)) as i16))
}

/// One group of 16 output bytes of the horizontal pass.
struct Group {
    /// First source byte of the group's 64-byte window.
    base: usize,
    /// Bytes of the window inside the source row.
    load_mask: u64,
    /// Output bytes of the group inside the output row.
    store_mask: u16,
}

/// The horizontal pass of one size pair, prepared for the AVX-512 kernel.
pub struct HPlan {
    groups: Vec<Group>,
    /// Tap pairs per output (every lane runs the same number; missing taps weigh 0).
    pairs: usize,
    /// Per (group, pair): byte indices into the window, the pair's values at bytes 4l and 4l + 2.
    index: Vec<[u8; 64]>,
    /// Per (group, pair): the pair's high and low weight parts, as 16-bit pairs per lane.
    high: Vec<[i16; 32]>,
    low: Vec<[i16; 32]>,
    in_len: usize,
    out_len: usize,
    /// Fractional bits of the weights.
    precision: u32,
}

impl HPlan {
    /// The plan for resizing rows of `in_pixels` RGB pixels with `w`, or
    /// `None` when some group's taps span more than 64 source bytes.
    pub fn new(w: &Weights, in_pixels: usize) -> Option<HPlan> {
        let out_len = w.bounds.len() * 3;
        let in_len = in_pixels * 3;
        let pairs = w.bounds.iter().map(|b| b.1).max().unwrap_or(1).div_ceil(2);
        if pairs > MAX_PAIRS {
            return None;
        }
        let n_groups = out_len.div_ceil(16);
        let mut plan = HPlan {
            groups: Vec::with_capacity(n_groups),
            pairs,
            index: vec![[0u8; 64]; n_groups * pairs],
            high: vec![[0i16; 32]; n_groups * pairs],
            low: vec![[0i16; 32]; n_groups * pairs],
            in_len,
            out_len,
            precision: w.precision,
        };
        for g in 0..n_groups {
            let lanes = 16.min(out_len - 16 * g);
            // Starts need not grow monotonically (zero end taps are trimmed).
            let pixels = 16 * g / 3..=(16 * g + lanes - 1) / 3;
            let base = w.bounds[pixels]
                .iter()
                .map(|b| b.0)
                .min()
                .expect("a group has pixels")
                * 3;
            for l in 0..lanes {
                let (byte, x) = (16 * g + l, (16 * g + l) / 3);
                let (start, count) = w.bounds[x];
                for k in 0..count {
                    let offset = (start + k) * 3 + byte % 3 - base;
                    if offset >= 64 {
                        return None;
                    }
                    let (hi, lo) = split(w.weights[x * w.window + k])?;
                    let slot = g * pairs + k / 2;
                    plan.index[slot][4 * l + 2 * (k % 2)] = offset as u8;
                    plan.high[slot][2 * l + k % 2] = hi;
                    plan.low[slot][2 * l + k % 2] = lo;
                }
            }
            let valid = in_len - base;
            plan.groups.push(Group {
                base,
                load_mask: if valid >= 64 {
                    u64::MAX
                } else {
                    (1u64 << valid) - 1
                },
                store_mask: ((1u32 << lanes) - 1) as u16,
            });
        }
        Some(plan)
    }

    /// Resizes `rows` rows of `src` (each `in_len` bytes) horizontally into `dst`.
    ///
    /// # Safety
    /// The CPU must have the features of [`available`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
    pub unsafe fn run(&self, src: &[u8], rows: usize, dst: &mut [u8]) {
        assert!(src.len() >= rows * self.in_len && dst.len() >= rows * self.out_len);
        // One copy per pair count keeps a group's constants in registers.
        match self.pairs {
            1 => self.run_pairs::<1>(src, rows, dst),
            2 => self.run_pairs::<2>(src, rows, dst),
            3 => self.run_pairs::<3>(src, rows, dst),
            4 => self.run_pairs::<4>(src, rows, dst),
            5 => self.run_pairs::<5>(src, rows, dst),
            6 => self.run_pairs::<6>(src, rows, dst),
            7 => self.run_pairs::<7>(src, rows, dst),
            8 => self.run_pairs::<8>(src, rows, dst),
            _ => unreachable!("plans have at most {MAX_PAIRS} pairs"),
        }
    }

    /// [`HPlan::run`] for plans of `P` tap pairs: group by group, the group's
    /// permutations and weights loaded once, then every row.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
    unsafe fn run_pairs<const P: usize>(&self, src: &[u8], rows: usize, dst: &mut [u8]) {
        debug_assert_eq!(P, self.pairs);
        let half = _mm512_set1_epi32(1 << (self.precision - 1));
        let shift = _mm_cvtsi32_si128(self.precision as i32);
        let zero = _mm512_setzero_si512();
        // Even bytes take the permuted value, odd bytes are zero: 16-bit lanes.
        const EVEN: u64 = 0x5555_5555_5555_5555;
        // Rows in blocks, so that a block's source and output lines stay in L1
        // while every group passes over them.
        const ROWS: usize = 16;
        for y0 in (0..rows).step_by(ROWS) {
            let block = ROWS.min(rows - y0);
            // The next block's source lines are fetched while this one runs
            // (the source usually comes from memory, not cache).
            let next = (y0 + ROWS).min(rows) * self.in_len..(y0 + 2 * ROWS).min(rows) * self.in_len;
            for at in next.step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().add(at) as *const i8);
            }
            for (g, group) in self.groups.iter().enumerate() {
                let slots = g * P..(g + 1) * P;
                let idx: [__m512i; P] = load_all(&self.index[slots.clone()]);
                let wh: [__m512i; P] = load_all(&self.high[slots.clone()]);
                let wl: [__m512i; P] = load_all(&self.low[slots]);
                let mut s = src.as_ptr().add(y0 * self.in_len + group.base);
                let mut d = dst.as_mut_ptr().add(y0 * self.out_len + 16 * g);
                for _ in 0..block {
                    // SAFETY (loads/stores): the load mask keeps the window inside this
                    // row (base < in_len); the store mask keeps 16g + lane < out_len;
                    // the rows are inside src and dst (asserted in run).
                    let window = _mm512_maskz_loadu_epi8(group.load_mask, s as *const i8);
                    let (mut hi, mut lo) = (zero, half);
                    for p in 0..P {
                        let pair = _mm512_maskz_permutexvar_epi8(EVEN, idx[p], window);
                        hi = _mm512_dpwssd_epi32(hi, pair, wh[p]);
                        lo = _mm512_dpwssd_epi32(lo, pair, wl[p]);
                    }
                    let acc = _mm512_add_epi32(lo, _mm512_slli_epi32::<{ LO_BITS }>(hi));
                    let v = _mm512_max_epi32(_mm512_sra_epi32(acc, shift), zero);
                    _mm_mask_storeu_epi8(d as *mut i8, group.store_mask, _mm512_cvtusepi32_epi8(v));
                    s = s.add(self.in_len);
                    d = d.add(self.out_len);
                }
            }
        }
    }
}

/// The `P` 64-byte vectors of `v` (at least `P` long, 64-byte elements).
#[inline(always)]
unsafe fn load_all<T, const P: usize>(v: &[T]) -> [__m512i; P] {
    assert!(v.len() >= P && std::mem::size_of::<T>() == 64);
    // SAFETY: element p is 64 readable bytes (checked above).
    std::array::from_fn(|p| unsafe { _mm512_loadu_si512(v.as_ptr().add(p) as *const __m512i) })
}

/// Output row `i` = weighted sum of input rows `start_i ..` (rows of `row_len`
/// bytes), clipped to 8 bits, for the output rows `range` of `w`; row `i`
/// goes to `out[(i - range.start) * row_len ..]`.
///
/// # Safety
/// The CPU must have the features of [`available`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
pub unsafe fn rows_pass(
    src: &[u8],
    row_len: usize,
    w: &Weights,
    range: std::ops::Range<usize>,
    out: &mut [u8],
) {
    assert!(range.end <= w.bounds.len() && out.len() >= range.len() * row_len);
    let half = _mm512_set1_epi32(1 << (w.precision - 1));
    let shift = _mm_cvtsi32_si128(w.precision as i32);
    let zero = _mm512_setzero_si512();
    let mut high = Vec::with_capacity(w.window.div_ceil(2));
    let mut low = Vec::with_capacity(w.window.div_ceil(2));
    for i in range.clone() {
        let (start, count) = w.bounds[i];
        assert!((start + count) * row_len <= src.len());
        let taps = &w.weights[i * w.window..][..count];
        // Pair weights as two 16-bit halves of an i32, broadcast.
        high.clear();
        low.clear();
        for pair in taps.chunks(2) {
            let (h0, l0) = split(pair[0]).expect("normalized weights fit 16-bit halves");
            let (h1, l1) = pair
                .get(1)
                .map_or((0, 0), |&w| split(w).expect("normalized weights fit"));
            let join = |a: i16, b: i16| (a as u16 as u32 | ((b as u16 as u32) << 16)) as i32;
            high.push(_mm512_set1_epi32(join(h0, h1)));
            low.push(_mm512_set1_epi32(join(l0, l1)));
        }
        let rows = src.as_ptr().add(start * row_len);
        let dst = out.as_mut_ptr().add((i - range.start) * row_len);
        let mut x = 0;
        while x < row_len {
            let n = 32.min(row_len - x);
            let mask: __mmask32 = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
            let (mut hi_a, mut hi_b, mut lo_a, mut lo_b) = (zero, zero, half, half);
            for (p, (wh, wl)) in high.iter().zip(low.iter()).enumerate() {
                // SAFETY: rows start + 2p (+ 1) < start + count are inside `src`
                // (asserted), and the masked load stays in the row.
                let r0 = rows.add(2 * p * row_len + x) as *const i8;
                let a = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask, r0));
                let b = if 2 * p + 1 < count {
                    _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask, r0.add(row_len)))
                } else {
                    zero
                };
                // Lane L of `first` pairs columns 8L..8L+3, of `second` 8L+4..8L+7.
                let first = _mm512_unpacklo_epi16(a, b);
                let second = _mm512_unpackhi_epi16(a, b);
                hi_a = _mm512_dpwssd_epi32(hi_a, first, *wh);
                lo_a = _mm512_dpwssd_epi32(lo_a, first, *wl);
                hi_b = _mm512_dpwssd_epi32(hi_b, second, *wh);
                lo_b = _mm512_dpwssd_epi32(lo_b, second, *wl);
            }
            let a = _mm512_add_epi32(lo_a, _mm512_slli_epi32::<{ LO_BITS }>(hi_a));
            let b = _mm512_add_epi32(lo_b, _mm512_slli_epi32::<{ LO_BITS }>(hi_b));
            // Per 128-bit lane the pack puts columns 8L..8L+7 in order again.
            let words = _mm512_packs_epi32(_mm512_sra_epi32(a, shift), _mm512_sra_epi32(b, shift));
            let bytes = _mm512_cvtusepi16_epi8(_mm512_max_epi16(words, zero));
            _mm256_mask_storeu_epi8(dst.add(x) as *mut i8, mask, bytes);
            x += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::Filter;

    /// The model families' sizes from 300-pixel observations take the direct
    /// horizontal pass (no silent fallback to the transposed one).
    #[test]
    fn common_sizes_have_a_direct_plan() {
        for out in [336, 308, 316, 224, 384, 448, 150] {
            for filter in [Filter::Bicubic, Filter::Bilinear] {
                let w = Weights::new(300, out, filter);
                assert!(HPlan::new(&w, 300).is_some(), "300 -> {out} {filter:?}");
            }
        }
        // Strong downscaling needs wider windows than 64 bytes.
        assert!(HPlan::new(&Weights::new(1000, 100, Filter::Bicubic), 1000).is_none());
    }
}
