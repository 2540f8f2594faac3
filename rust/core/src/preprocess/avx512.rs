//! AVX-512 (BW + VBMI + VNNI) kernels for 8-bit fixed-point resampling, exact.
//!
//! Pillow accumulates `half + sum(v * w)` in i32 with 22-bit weights (torch's
//! uint8 kernel the same with at most 15-bit weights). Here each weight is
//! written as three signed bytes, `w = d2 * 2^16 + d1 * 2^8 + d0` ([`digits`]),
//! the pixel bytes of four taps sit side by side in each 32-bit lane, and
//! `vpdpbusd` (unsigned byte times signed byte, four products summed into an
//! i32 lane) gives the three sums `sum(v * d_j)` for 16 outputs per register;
//! `half + sum_0 + (sum_1 << 8) + (sum_2 << 16)` is the same i32 Pillow
//! computes, bit for bit (wrapping arithmetic is exact modulo 2^32 either
//! way); the sum is then shifted by the weights' precision and clipped to
//! 0..=255 by the saturating packs.
//!
//! - Horizontal pass ([`HPlan`]): no transpose. Each group of 16 output bytes
//!   (interleaved RGB) reads one 64-byte window of the source row; a byte
//!   permutation (`vpermb`) puts each lane's four taps side by side, with
//!   per-lane digits prepared once per size; four groups are packed and
//!   stored as 64 bytes. Sizes whose windows do not fit 64 bytes (strong
//!   downscaling) have no plan: the caller uses the transposed row pass.
//! - Vertical pass ([`rows_pass`]): output row = weighted rows, 64 bytes per
//!   step, four rows interleaved by byte and word unpacks. Rows of more than
//!   16 taps take [`rows_pass_pairs`] (16-bit pair products, each weight as
//!   two 16-bit halves `w = hi * 2^11 + lo`).

use std::arch::x86_64::*;

use super::pillow::Weights;

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
    /// Bytes of the window inside the source row (0 for the padding groups).
    load_mask: u64,
}

/// Groups computed together: 64 output bytes, packed and stored at once.
const GROUPS: usize = 4;

/// Dword `4g + L` of the packed block takes dword `4L + g`: after the two
/// in-lane packs, 128-bit lane `L` holds four bytes of each group `g`.
static BLOCK_ORDER: [i32; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

/// The horizontal pass of one size pair, prepared for the AVX-512 kernel.
pub struct HPlan {
    /// Padded with empty groups to a multiple of [`GROUPS`].
    groups: Vec<Group>,
    /// Tap quads per output (every lane runs the same number; missing taps weigh 0).
    quads: usize,
    /// Per (group, quad), four vectors: the byte indices into the window (tap
    /// `4q + t` of lane `l` at byte `4l + t`), then those taps' three weight
    /// digits (see [`digits`]) at the same places, as signed bytes.
    table: Vec<[u8; 64]>,
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
        let quads = w
            .bounds
            .iter()
            .map(|b| b.1)
            .max()
            .unwrap_or(1)
            .div_ceil(4)
            .max(1);
        if quads > MAX_QUADS {
            return None;
        }
        let n_groups = out_len.div_ceil(16);
        let padded = n_groups.next_multiple_of(GROUPS);
        let mut plan = HPlan {
            groups: Vec::with_capacity(padded),
            quads,
            table: vec![[0u8; 64]; padded * quads * 4],
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
                    let d = digits(w.weights[x * w.window + k])?;
                    let (slot, at) = (4 * (g * quads + k / 4), 4 * l + k % 4);
                    plan.table[slot][at] = offset as u8;
                    for (j, digit) in d.into_iter().enumerate() {
                        plan.table[slot + 1 + j][at] = digit as u8;
                    }
                }
            }
            plan.groups.push(Group {
                base,
                load_mask: first_bytes(in_len - base),
            });
        }
        plan.groups.resize_with(padded, || Group {
            base: 0,
            load_mask: 0,
        });
        Some(plan)
    }

    /// Resizes `rows` rows of `src` (each `in_len` bytes) horizontally into `dst`.
    ///
    /// # Safety
    /// The CPU must have the features of [`available`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
    pub unsafe fn run(&self, src: &[u8], rows: usize, dst: &mut [u8]) {
        assert!(src.len() >= rows * self.in_len && dst.len() >= rows * self.out_len);
        // One copy per quad count keeps the loops over quads unrolled.
        match self.quads {
            1 => self.run_quads::<1>(src, rows, dst),
            2 => self.run_quads::<2>(src, rows, dst),
            3 => self.run_quads::<3>(src, rows, dst),
            4 => self.run_quads::<4>(src, rows, dst),
            _ => unreachable!("plans have at most {MAX_QUADS} quads"),
        }
    }

    /// [`HPlan::run`] for plans of `Q` tap quads: per row and block of four
    /// groups, each group's window permuted into lanes of four taps, three
    /// digit products per quad, the four groups' sums packed to 64 bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
    unsafe fn run_quads<const Q: usize>(&self, src: &[u8], rows: usize, dst: &mut [u8]) {
        debug_assert_eq!(Q, self.quads);
        let half = _mm512_set1_epi32(1 << (self.precision - 1));
        let shift = _mm_cvtsi32_si128(self.precision as i32);
        let zero = _mm512_setzero_si512();
        let order = _mm512_loadu_si512(BLOCK_ORDER.as_ptr() as *const __m512i);
        // Rows in blocks, so that a block's source and output lines stay in L1
        // while every group passes over them.
        const ROWS: usize = 16;
        for y0 in (0..rows).step_by(ROWS) {
            let block = ROWS.min(rows - y0);
            // The next block's source lines are fetched while this one runs
            // (the source usually comes from memory, not cache), a few lines
            // per row computed: issued all at once, the prefetches filled the
            // line fill buffers and stalled the pass.
            let next = (y0 + ROWS).min(rows) * self.in_len..(y0 + 2 * ROWS).min(rows) * self.in_len;
            let lines = next.len().div_ceil(64);
            let per_row = lines.div_ceil(block * self.groups.len() / GROUPS).max(1);
            let mut fetch = next.start;
            for (b, groups) in self.groups.chunks_exact(GROUPS).enumerate() {
                let store_mask = first_bytes(self.out_len - 64 * b);
                // This block's vectors: fixed offsets from one pointer.
                let table =
                    self.table[b * GROUPS * Q * 4..][..GROUPS * Q * 4].as_ptr() as *const __m512i;
                for y in y0..y0 + block {
                    for _ in 0..per_row {
                        if fetch < next.end {
                            _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().add(fetch) as *const i8);
                            fetch += 64;
                        }
                    }
                    let row = src.as_ptr().add(y * self.in_len);
                    // A plain loop: a closure here would not be inlined.
                    let mut sums = [zero; GROUPS];
                    for (gi, (group, sum)) in groups.iter().zip(sums.iter_mut()).enumerate() {
                        // SAFETY: the load mask keeps the window inside this row
                        // (base < in_len; padding groups load nothing).
                        let window = _mm512_maskz_loadu_epi8(
                            group.load_mask,
                            row.add(group.base) as *const i8,
                        );
                        let mut acc = [half, zero, zero];
                        for q in 0..Q {
                            // SAFETY: GROUPS * Q * 4 vectors from `table` (sliced above).
                            let at = table.add((gi * Q + q) * 4);
                            let taps = _mm512_permutexvar_epi8(_mm512_loadu_si512(at), window);
                            for (j, a) in acc.iter_mut().enumerate() {
                                *a = _mm512_dpbusd_epi32(
                                    *a,
                                    taps,
                                    _mm512_loadu_si512(at.add(1 + j)),
                                );
                            }
                        }
                        *sum = digit_sum(acc, shift);
                    }
                    let bytes = _mm512_packus_epi16(
                        _mm512_packs_epi32(sums[0], sums[1]),
                        _mm512_packs_epi32(sums[2], sums[3]),
                    );
                    // SAFETY: the store mask keeps 64b + byte < out_len; row y is inside dst
                    // (asserted in run).
                    let d = dst.as_mut_ptr().add(y * self.out_len + 64 * b);
                    _mm512_mask_storeu_epi8(
                        d as *mut i8,
                        store_mask,
                        _mm512_permutexvar_epi32(order, bytes),
                    );
                }
            }
        }
    }
}

/// [`rows_pass`] with 16-bit pair products (two taps per instruction, each
/// weight as two 16-bit halves), 32 bytes per step, any number of taps.
///
/// # Safety
/// The CPU must have the features of [`available`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
pub unsafe fn rows_pass_pairs(
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

/// `w` as three signed bytes, `w = d2 * 2^16 + d1 * 2^8 + d0` with `d0`, `d1`
/// in -128..=127 (balanced digits); `None` when `d2` overflows i8 (never for
/// normalized filter weights, which stay within about 2^22).
fn digits(w: i32) -> Option<[i8; 3]> {
    let d0 = ((w.wrapping_add(128)) & 255) - 128;
    let w1 = (w - d0) >> 8;
    let d1 = ((w1 + 128) & 255) - 128;
    let d2 = i8::try_from((w1 - d1) >> 8).ok()?;
    Some([d0 as i8, d1 as i8, d2])
}

/// The output of per-digit sums `[sum_0, sum_1, sum_2]` (`half` already in
/// `sum_0`): `sum_0 + (sum_1 << 8) + (sum_2 << 16)`, Pillow's i32 sum, shifted
/// right by the weights' precision (clipping is left to the packs).
#[inline(always)]
unsafe fn digit_sum([d0, d1, d2]: [__m512i; 3], shift: __m128i) -> __m512i {
    let low = _mm512_add_epi32(d0, _mm512_slli_epi32::<8>(d1));
    _mm512_sra_epi32(_mm512_add_epi32(low, _mm512_slli_epi32::<16>(d2)), shift)
}

/// Mask of the first `n` bytes of a 64-byte vector (all of them from 64 on).
fn first_bytes(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Most groups of four taps of a plan or a [`rows_pass`] row (16 taps; rows
/// with more take [`rows_pass_pairs`], wider windows have no [`HPlan`]).
const MAX_QUADS: usize = 4;

/// Output row `i` = weighted sum of input rows `start_i ..` (rows of `row_len`
/// bytes), clipped to 8 bits, for the output rows `range` of `w`; row `i`
/// goes to `out[(i - range.start) * row_len ..]`. Four input rows per step:
/// their bytes interleaved into 32-bit lanes of four, times the four taps'
/// digits (three `vpdpbusd` per 16 outputs and four taps, where the pair
/// kernel takes four per two taps).
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
    for i in range.clone() {
        let (start, count) = w.bounds[i];
        assert!((start + count) * row_len <= src.len());
        let at = (i - range.start) * row_len;
        let taps = &w.weights[i * w.window..][..count];
        // SAFETY: rows start .. start + count are inside `src` (asserted) and
        // output row i is inside `out` (asserted above).
        let (rows, dst) = (src.as_ptr().add(start * row_len), out.as_mut_ptr().add(at));
        match count.div_ceil(4) {
            // No taps: Pillow's sum is `half`, which shifts to 0.
            0 => std::ptr::write_bytes(dst, 0, row_len),
            1 => row_quads::<1>(rows, row_len, taps, w.precision, dst),
            2 => row_quads::<2>(rows, row_len, taps, w.precision, dst),
            3 => row_quads::<3>(rows, row_len, taps, w.precision, dst),
            4 => row_quads::<4>(rows, row_len, taps, w.precision, dst),
            _ => rows_pass_pairs(src, row_len, w, i..i + 1, &mut out[at..at + row_len]),
        }
    }
}

/// One output row of [`rows_pass`] from `Q` quads of taps: `taps` weigh the
/// rows of `row_len` bytes from `rows` on (1 to `4Q` taps); `row_len` bytes
/// to `dst`.
///
/// # Safety
/// The CPU must have the features of [`available`]; `rows` must hold
/// `taps.len()` rows and `dst` `row_len` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")]
unsafe fn row_quads<const Q: usize>(
    rows: *const u8,
    row_len: usize,
    taps: &[i32],
    precision: u32,
    dst: *mut u8,
) {
    let count = taps.len();
    debug_assert!(count > 4 * (Q - 1) && count <= 4 * Q);
    let half = _mm512_set1_epi32(1 << (precision - 1));
    let shift = _mm_cvtsi32_si128(precision as i32);
    let zero = _mm512_setzero_si512();
    // Per quad and digit: the four taps' digits as one broadcast dword.
    let mut bytes = [[[0u8; 4]; 3]; Q];
    for (k, &tap) in taps.iter().enumerate() {
        let d = digits(tap).expect("normalized weights fit three signed bytes");
        for j in 0..3 {
            bytes[k / 4][j][k % 4] = d[j] as u8;
        }
    }
    let weights: [[__m512i; 3]; Q] =
        bytes.map(|quad| quad.map(|d| _mm512_set1_epi32(i32::from_le_bytes(d))));
    let mut x = 0;
    while x < row_len {
        let n = 64.min(row_len - x);
        let mask = first_bytes(n);
        let mut acc = [[half, zero, zero]; 4];
        for (q, wq) in weights.iter().enumerate() {
            // Taps past `count` weigh 0 (zero digits): their slots read row
            // count - 1 instead of a row that may lie outside the image.
            // SAFETY: so every row read is inside `rows`; the masked load stays in the row.
            let load = |r: usize| {
                let k = (4 * q + r).min(count - 1);
                _mm512_maskz_loadu_epi8(mask, rows.add(k * row_len + x) as *const i8)
            };
            let (r0, r1, r2, r3) = (load(0), load(1), load(2), load(3));
            let (lo01, hi01) = (_mm512_unpacklo_epi8(r0, r1), _mm512_unpackhi_epi8(r0, r1));
            let (lo23, hi23) = (_mm512_unpacklo_epi8(r2, r3), _mm512_unpackhi_epi8(r2, r3));
            // Lane L of v[k] holds column 16 * (L / 4) + 4k + L % 4 of the four rows.
            let v = [
                _mm512_unpacklo_epi16(lo01, lo23),
                _mm512_unpackhi_epi16(lo01, lo23),
                _mm512_unpacklo_epi16(hi01, hi23),
                _mm512_unpackhi_epi16(hi01, hi23),
            ];
            for k in 0..4 {
                for j in 0..3 {
                    acc[k][j] = _mm512_dpbusd_epi32(acc[k][j], v[k], wq[j]);
                }
            }
        }
        let mut sum = [zero; 4];
        for (s, digit_sums) in sum.iter_mut().zip(acc) {
            *s = digit_sum(digit_sums, shift);
        }
        // Per 128-bit lane the packs restore column order: v[0], v[1] then v[2], v[3].
        let words01 = _mm512_packs_epi32(sum[0], sum[1]);
        let words23 = _mm512_packs_epi32(sum[2], sum[3]);
        _mm512_mask_storeu_epi8(
            dst.add(x) as *mut i8,
            mask,
            _mm512_packus_epi16(words01, words23),
        );
        x += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::Filter;

    #[test]
    fn digits_rebuild_the_weight() {
        for w in (-(1 << 21)..=(1 << 22) + 5).step_by(97).chain([
            -1,
            0,
            1,
            127,
            128,
            -128,
            -129,
            1 << 22,
        ]) {
            let [d0, d1, d2] = digits(w).expect("fits");
            assert_eq!(d2 as i32 * 65536 + d1 as i32 * 256 + d0 as i32, w, "{w}");
        }
    }

    /// The four-row kernel gives the pair kernel's bytes for every size and filter.
    #[test]
    fn quads_equal_pairs() {
        if !available() {
            return;
        }
        let mut seed = 7u64;
        for (sh, dh) in [
            (300, 308),
            (300, 336),
            (300, 224),
            (300, 384),
            (17, 5),
            (5, 17),
            (300, 150),
            (40, 13),
            (1, 3),
            (3, 1),
            (1000, 100),
            (300, 100),
        ] {
            for filter in [
                Filter::Bicubic,
                Filter::Bilinear,
                Filter::Lanczos,
                Filter::Box,
                Filter::Hamming,
            ] {
                for row_len in [1usize, 3, 63, 64, 65, 129, 924] {
                    let src: Vec<u8> = (0..sh * row_len)
                        .map(|_| {
                            seed = seed
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            (seed >> 56) as u8
                        })
                        .collect();
                    for w in [
                        Weights::new(sh, dh, filter),
                        Weights::torchvision(sh, dh, filter),
                    ] {
                        let (mut a, mut b) = (vec![0u8; dh * row_len], vec![0u8; dh * row_len]);
                        unsafe {
                            rows_pass_pairs(&src, row_len, &w, 0..dh, &mut a);
                            rows_pass(&src, row_len, &w, 0..dh, &mut b);
                        }
                        assert!(a == b, "{sh}->{dh} {filter:?} row {row_len}");
                    }
                }
            }
        }
    }

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
        // Plans of one to three tap quads exist (all_kernels_give_the_same_bytes
        // in pillow.rs compares each with the portable kernels).
        let quads = |i, o, f| HPlan::new(&Weights::new(i, o, f), i).map(|p| p.quads);
        assert_eq!(quads(300, 308, Filter::Bicubic), Some(1));
        assert_eq!(quads(300, 224, Filter::Bicubic), Some(2));
        assert_eq!(quads(300, 200, Filter::Lanczos), Some(3));
        // Strong downscaling needs wider windows than 64 bytes.
        assert!(HPlan::new(&Weights::new(1000, 100, Filter::Bicubic), 1000).is_none());
    }
}
