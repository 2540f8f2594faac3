//! 8-bit convolution resampling, reproduced exactly: Pillow's (22-bit
//! weights) and torch's uint8 antialiased kernel (16-bit weights, see
//! [`Weights::torchvision`]); same passes, other weights and precision.
//!
//! Why by hand: `fast_image_resize` (whose uint8 kernel matches torch's bit for
//! bit; the tests use it as the torchvision reference) stores coefficients in
//! 16 bits, the Pillow-SIMD scheme, while Pillow itself uses 22-bit fixed point. On sharp
//! edges the two differ by up to 2 levels of 255, i.e. 0.03 after CLIP's
//! normalization, over the 0.02 the pipeline promises; no maintained crate
//! implements Pillow's 22-bit scheme.
//!
//! The arithmetic follows Pillow's documented algorithm (`Image.resize` with
//! a convolution filter): per output pixel a window of input pixels weighted
//! by the filter stretched by max(1, scale), weights normalized to sum 1 and
//! rounded half away from zero to 22 fractional bits, accumulation in i32
//! starting at one half, a horizontal pass then a vertical one, each clipped
//! to 0..=255. With AVX-512 (BW/VBMI/VNNI) both passes run in
//! `avx512`; otherwise both run as a row-wise pass (the horizontal one
//! on the transposed image) so that the inner loop is a contiguous
//! multiply-add that the compiler vectorizes, in AVX2 when the CPU has it.

use super::resize::Filter;
use super::Backend;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn boxed(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
    } else {
        0.0
    }
}

/// The Hamming-windowed sinc; `product(sin(px), px, window)` forms the value
/// (Pillow and fast_image_resize multiply in different orders, which can
/// differ in the last bit).
fn hamming_with(x: f64, product: fn(f64, f64, f64) -> f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * std::f64::consts::PI;
        product(x.sin(), x, 0.54 + 0.46 * x.cos())
    }
}

fn hamming(x: f64) -> f64 {
    hamming_with(x, |sin, x, window| sin / x * window)
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

fn kernel(filter: Filter) -> (fn(f64) -> f64, f64) {
    match filter {
        Filter::Box => (boxed, 0.5),
        Filter::Bilinear => (bilinear, 1.0),
        Filter::Hamming => (hamming, 1.0),
        Filter::Bicubic => (bicubic, 2.0),
        Filter::Lanczos => (lanczos, 3.0),
    }
}

fn hamming_tv(x: f64) -> f64 {
    hamming_with(x, |sin, x, window| window * sin / x)
}

/// The filters as `fast_image_resize` evaluates them (Hamming's product is
/// in another order than Pillow's; the others are the same functions).
fn kernel_tv(filter: Filter) -> (fn(f64) -> f64, f64) {
    match filter {
        Filter::Hamming => (hamming_tv, 1.0),
        other => kernel(other),
    }
}

/// Fixed-point weights of a 1-D resize: output `i` reads `count` inputs from
/// `start`, weights `weights[i * window ..][..count]` with `precision`
/// fractional bits.
pub struct Weights {
    pub(super) bounds: Vec<(usize, usize)>,
    pub(super) weights: Vec<i32>,
    pub(super) window: usize,
    /// Fractional bits of the fixed-point weights.
    pub(super) precision: u32,
}

impl Weights {
    /// Weights for resizing `in_size` samples to `out_size`.
    pub fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        let (func, support) = kernel(filter);
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = support * filter_scale;
        let window = support.ceil() as usize * 2 + 1;
        let inv = 1.0 / filter_scale;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * window];
        let mut real = vec![0f64; window];
        for (i, out) in weights.chunks_exact_mut(window).enumerate() {
            let center = (i as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero before the clamp to 0.
            let start = ((center - support + 0.5).trunc() as isize).max(0) as usize;
            let end = (((center + support + 0.5).trunc() as isize).max(0) as usize).min(in_size);
            let count = end.saturating_sub(start).min(window);
            let mut total = 0.0;
            for (x, w) in real[..count].iter_mut().enumerate() {
                *w = func(((x + start) as f64 - center + 0.5) * inv);
                total += *w;
            }
            for (w, slot) in real[..count].iter().zip(out.iter_mut()) {
                let w = if total != 0.0 { w / total } else { *w };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                *slot = if w < 0.0 {
                    (scaled - 0.5).trunc() as i32
                } else {
                    (scaled + 0.5).trunc() as i32
                };
            }
            bounds.push(trim_zero_ends(out, start, count));
        }
        Self {
            bounds,
            weights,
            window,
            precision: PRECISION_BITS,
        }
    }

    /// Output `i`'s first input, weights and precision.
    #[inline(always)]
    fn taps(&self, i: usize) -> (usize, &[i32], u32) {
        let (start, count) = self.bounds[i];
        (
            start,
            &self.weights[i * self.window..][..count],
            self.precision,
        )
    }

    /// Weights of torch's uint8 antialiased resize (torchvision backend), as
    /// `fast_image_resize` computes them (bit-equal to torch): bounds
    /// floor(center - support) .. ceil(center + support), zero end weights
    /// dropped, weights normalized in f64, then rounded to 16-bit integers
    /// with the most fractional bits that keep the largest weight below 2^15.
    pub fn torchvision(in_size: usize, out_size: usize, filter: Filter) -> Self {
        let (func, support) = kernel_tv(filter);
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let radius = support * filter_scale;
        let window = radius.ceil() as usize * 2 + 1;
        let inv = 1.0 / filter_scale;
        let mut real = vec![0f64; out_size * window];
        let mut bounds = Vec::with_capacity(out_size);
        for (i, out) in real.chunks_exact_mut(window).enumerate() {
            let in_center = (i as f64 + 0.5) * scale;
            let x_min = (in_center - radius).floor().max(0.0) as usize;
            let x_max = ((in_center + radius).ceil().min(in_size as f64) as usize).max(x_min);
            let center = in_center - 0.5;
            let mut start = x_min;
            let mut values = Vec::with_capacity(window);
            let mut total = 0.0;
            for x in x_min..x_max {
                let w = func((x as f64 - center) * inv);
                if x == start && w == 0.0 {
                    start += 1;
                } else {
                    values.push(w);
                    total += w;
                }
            }
            let mut end = x_max;
            for &w in values.iter().rev() {
                if end <= start || w != 0.0 {
                    break;
                }
                end -= 1;
            }
            if total != 0.0 {
                values.iter_mut().for_each(|w| *w /= total);
            }
            // At most `window` values: the range x_min..x_max spans 2 * radius + 1 at most.
            out[..values.len().min(window)].copy_from_slice(&values[..values.len().min(window)]);
            bounds.push((start, end.saturating_sub(start).min(window)));
        }
        let max_weight = real.iter().copied().fold(0.0f64, f64::max);
        let mut precision = 0u32;
        for p in 0..PRECISION_BITS {
            precision = p;
            if (max_weight * (1u64 << (p + 1)) as f64).round() as i64 >= 1 << 15 {
                break;
            }
        }
        let factor = (1u64 << precision) as f64;
        let mut weights: Vec<i32> = real.iter().map(|w| (w * factor).round() as i32).collect();
        for (out, b) in weights.chunks_exact_mut(window).zip(bounds.iter_mut()) {
            *b = trim_zero_ends(out, b.0, b.1);
        }
        Self {
            bounds,
            weights,
            window,
            precision,
        }
    }
}

/// Drops the taps of fixed-point weight 0 at both ends of one output's window
/// (`out[..count]`, first input `start`), shifting the rest to the front;
/// returns the new (start, count). Exact (those taps add nothing) and less
/// work: bicubic upscaling has 4 non-zero taps of 5. An all-zero window is kept.
fn trim_zero_ends(out: &mut [i32], start: usize, count: usize) -> (usize, usize) {
    let lead = out[..count].iter().take_while(|&&w| w == 0).count();
    if lead == count {
        return (start, count);
    }
    let trail = out[..count].iter().rev().take_while(|&&w| w == 0).count();
    let kept = count - lead - trail;
    out.copy_within(lead..lead + kept, 0);
    (start + lead, kept)
}

#[inline(always)]
fn clip8(a: i32, precision: u32) -> u8 {
    (a >> precision).clamp(0, 255) as u8
}

/// Accumulates one output row into `dst[from..row_len]` (clipped to 8 bits),
/// portable code: 32 lanes at a time so that the accumulators stay in
/// registers across the taps and the compiler vectorizes the lanes.
fn row_of_portable(
    src: &[u8],
    row_len: usize,
    (start, taps, precision): (usize, &[i32], u32),
    dst: &mut [u8],
    from: usize,
) {
    const L: usize = 32;
    let rows = &src[start * row_len..(start + taps.len()) * row_len];
    let mut x = from;
    while x < row_len {
        let n = L.min(row_len - x);
        let mut acc = [1i32 << (precision - 1); L];
        for (k, &weight) in taps.iter().enumerate() {
            let row = &rows[k * row_len + x..k * row_len + x + n];
            for (a, &s) in acc.iter_mut().zip(row) {
                *a += s as i32 * weight;
            }
        }
        for (o, &a) in dst[x..x + n].iter_mut().zip(acc.iter()) {
            *o = clip8(a, precision);
        }
        x += n;
    }
}

/// AVX2 version of [`row_of_portable`]: 32 output bytes per iteration with the
/// four 8-lane accumulators kept in registers across the taps.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_of_avx2(
    src: &[u8],
    row_len: usize,
    (start, taps, precision): (usize, &[i32], u32),
    dst: &mut [u8],
) {
    use std::arch::x86_64::*;
    // Every load below reads inside `rows`, every store inside `dst[..row_len]`.
    let rows = &src[start * row_len..(start + taps.len()) * row_len];
    let dst = &mut dst[..row_len];
    let half = _mm256_set1_epi32(1 << (precision - 1));
    let shift = _mm_cvtsi32_si128(precision as i32);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut x = 0;
    while x + 32 <= row_len {
        let (mut a0, mut a1, mut a2, mut a3) = (half, half, half, half);
        for (k, &weight) in taps.iter().enumerate() {
            let p = rows.as_ptr().add(k * row_len + x);
            let w = _mm256_set1_epi32(weight);
            let v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
            let v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8) as *const __m128i));
            let v2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(16) as *const __m128i));
            let v3 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(24) as *const __m128i));
            a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(v0, w));
            a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(v1, w));
            a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(v2, w));
            a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(v3, w));
        }
        // >> 22, then saturating packs: i32 -> i16 -> u8 is exactly clamp(0, 255).
        let s0 = _mm256_sra_epi32(a0, shift);
        let s1 = _mm256_sra_epi32(a1, shift);
        let s2 = _mm256_sra_epi32(a2, shift);
        let s3 = _mm256_sra_epi32(a3, shift);
        let bytes = _mm256_packus_epi16(_mm256_packs_epi32(s0, s1), _mm256_packs_epi32(s2, s3));
        // The packs work per 128-bit half: put the 4-byte groups back in order.
        let bytes = _mm256_permutevar8x32_epi32(bytes, order);
        _mm256_storeu_si256(dst.as_mut_ptr().add(x) as *mut __m256i, bytes);
        x += 32;
    }
    // Tail: 8 bytes at a time.
    while x + 8 <= row_len {
        let mut a = half;
        for (k, &weight) in taps.iter().enumerate() {
            let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                rows.as_ptr().add(k * row_len + x) as *const __m128i
            ));
            a = _mm256_add_epi32(a, _mm256_mullo_epi32(v, _mm256_set1_epi32(weight)));
        }
        let s = _mm256_sra_epi32(a, shift);
        let words = _mm_packs_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        _mm_storel_epi64(
            dst.as_mut_ptr().add(x) as *mut __m128i,
            _mm_packus_epi16(words, words),
        );
        x += 8;
    }
    row_of_portable(src, row_len, (start, taps, precision), dst, x);
}

/// Which implementation of the two passes runs; all give the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Plain Rust (vectorized by the compiler).
    Portable,
    /// AVX2 row passes; the horizontal pass runs on the transposed image.
    Avx2,
    /// AVX-512 BW/VBMI/VNNI: direct horizontal pass (where the filter window
    /// fits 64 bytes), weights as signed-byte digits times four taps per lane.
    Avx512,
}

impl Kernels {
    /// The fastest implementation this CPU runs.
    pub fn best() -> Self {
        [Kernels::Avx512, Kernels::Avx2]
            .into_iter()
            .find(|k| k.runs_here())
            .unwrap_or(Kernels::Portable)
    }

    /// True when this CPU runs these kernels.
    pub fn runs_here(self) -> bool {
        match self {
            Kernels::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx512 => super::avx512::available(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every implementation this CPU runs.
    pub fn available() -> Vec<Self> {
        [Kernels::Portable, Kernels::Avx2, Kernels::Avx512]
            .into_iter()
            .filter(|k| k.runs_here())
            .collect()
    }
}

/// One output row from the input rows `start ..` weighted by `taps` (fixed
/// point with `precision` fractional bits).
#[inline(always)]
fn row_of(src: &[u8], row_len: usize, taps: (usize, &[i32], u32), dst: &mut [u8], avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only for kernels that run here (asserted in `begin`).
        unsafe { row_of_avx2(src, row_len, taps, dst) };
        return;
    }
    let _ = avx2;
    row_of_portable(src, row_len, taps, dst, 0)
}

/// Output rows transposed back in blocks of this many, so that the stores of
/// each source row are `BLOCK` contiguous pixels instead of one.
const BLOCK: usize = 16;

/// Output rows `range` of `w` (row `i` = weighted sum of input rows
/// `start_i ..`, rows of `row_len` bytes) into `out`, row `i` at
/// `(i - range.start) * row_len`.
fn rows_range(
    src: &[u8],
    row_len: usize,
    w: &Weights,
    range: std::ops::Range<usize>,
    out: &mut [u8],
    kernels: Kernels,
) {
    #[cfg(target_arch = "x86_64")]
    if kernels == Kernels::Avx512 {
        // SAFETY: Avx512 is chosen only when the CPU has its features.
        unsafe { super::avx512::rows_pass(src, row_len, w, range, out) };
        return;
    }
    let avx2 = kernels != Kernels::Portable;
    for (i, dst) in range.zip(out.chunks_exact_mut(row_len)) {
        row_of(src, row_len, w.taps(i), dst, avx2);
    }
}

/// The horizontal pass as a row pass over the transposed image: output row
/// `i` (weighted input rows `start_i ..`, rows of `row_len` bytes) is output
/// column `i`; accumulator `y * 3 + c` goes to pixel (y, i) of the RGB8
/// image `out` with `width` columns, rows transposed back in blocks.
fn transposed_pass(
    src: &[u8],
    row_len: usize,
    w: &Weights,
    out: &mut [u8],
    tmp: &mut Vec<u8>,
    width: usize,
    kernels: Kernels,
) {
    // Kernels other than Portable are only ever chosen on a CPU that has them.
    let avx2 = kernels != Kernels::Portable;
    set_len(tmp, BLOCK * row_len);
    let pixels = row_len / 3;
    for i0 in (0..w.bounds.len()).step_by(BLOCK) {
        let b = BLOCK.min(w.bounds.len() - i0);
        for (j, dst) in tmp.chunks_exact_mut(row_len).take(b).enumerate() {
            row_of(src, row_len, w.taps(i0 + j), dst, avx2);
        }
        assert!(
            out.len() >= ((pixels - 1) * width + i0 + b) * 3,
            "transposed_pass: output size"
        );
        let (t, o) = (tmp.as_ptr(), out.as_mut_ptr());
        for y in 0..pixels {
            let d = (y * width + i0) * 3;
            for j in 0..b {
                // SAFETY: j < b <= BLOCK rows of `tmp` (row_len = 3 * pixels bytes
                // each, y < pixels); d + 3 * b <= out.len() (asserted above).
                unsafe {
                    std::ptr::copy_nonoverlapping(t.add(j * row_len + y * 3), o.add(d + j * 3), 3)
                };
            }
        }
    }
}

/// Sets `v` to length `n` without clearing: every byte is overwritten next.
fn set_len(v: &mut Vec<u8>, n: usize) {
    v.resize(n, 0);
    v.truncate(n);
}

/// Transposes an RGB8 image of `h` x `w` pixels into `w` x `h`.
fn transpose_rgb(src: &[u8], (h, w): (usize, usize), dst: &mut Vec<u8>) {
    assert_eq!(src.len(), h * w * 3, "transpose_rgb: source size");
    set_len(dst, h * w * 3);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // Tiles keep both sides in cache.
    const T: usize = 32;
    for y0 in (0..h).step_by(T) {
        let y1 = (y0 + T).min(h);
        for x0 in (0..w).step_by(T) {
            let x1 = (x0 + T).min(w);
            for y in y0..y1 {
                for x in x0..x1 {
                    // SAFETY: y < h and x < w, so both offsets + 3 stay within the
                    // h * w * 3 bytes of `src` (asserted) and `dst` (sized above).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            s.add((y * w + x) * 3),
                            d.add((x * h + y) * 3),
                            3,
                        )
                    };
                }
            }
        }
    }
}

/// Buffers reused across the images one worker resizes, and the weights of
/// the last sizes seen (a batch has one size: computed once per worker).
#[derive(Default)]
pub struct PillowScratch {
    transposed: Vec<u8>,
    horizontal: Vec<u8>,
    row: Vec<u8>,
    weights_w: Option<(Key, Weights)>,
    weights_h: Option<(Key, Weights)>,
    /// Rows of the vertical pass handed out by [`Resampled::rows`].
    band: Vec<u8>,
    /// The vertical pass's result when it runs first (Pillow 13).
    vertical_first: Vec<u8>,
    /// The direct horizontal pass of `weights_w`, when it has one.
    #[cfg(target_arch = "x86_64")]
    hplan: Option<(Key, Option<super::avx512::HPlan>)>,
}

/// What a set of weights is computed from: (in size, out size, filter, backend).
type Key = (usize, usize, Filter, Backend);

/// The weights for `key`, from `slot` or computed into it.
fn cached(slot: &mut Option<(Key, Weights)>, key: Key) -> &Weights {
    if slot.as_ref().map(|(k, _)| *k) != Some(key) {
        let weights = match key.3 {
            Backend::Pillow | Backend::Pillow13 => Weights::new(key.0, key.1, key.2),
            Backend::Torchvision => Weights::torchvision(key.0, key.1, key.2),
        };
        *slot = Some((key, weights));
    }
    &slot.as_ref().expect("filled just above").1
}

/// Resizes the HWC RGB8 image `src` to `dst_size` into `out` as Pillow's
/// `Image.resize(size, filter)` does, with the fastest kernels of this CPU.
/// Sizes must differ (the caller skips equal ones).
pub fn resize(
    scratch: &mut PillowScratch,
    src: &[u8],
    src_size: (usize, usize),
    dst_size: (usize, usize),
    filter: Filter,
    out: &mut Vec<u8>,
) {
    resize_with(
        Kernels::best(),
        Backend::Pillow,
        scratch,
        src,
        src_size,
        dst_size,
        filter,
        out,
    )
}

/// [`resize`] with the given kernels (which this CPU must run, see
/// [`Kernels::available`]).
#[allow(clippy::too_many_arguments)]
pub fn resize_with(
    kernels: Kernels,
    backend: Backend,
    scratch: &mut PillowScratch,
    src: &[u8],
    src_size: (usize, usize),
    dst_size: (usize, usize),
    filter: Filter,
    out: &mut Vec<u8>,
) {
    let mut resampled = begin(kernels, backend, scratch, src, src_size, dst_size, filter);
    out.clear();
    out.extend_from_slice(resampled.rows(0, dst_size.0));
}

/// One image being resized: the horizontal pass is done, the vertical pass
/// runs on demand for the rows asked for, so that a caller can consume the
/// output band by band while it is in L1 (see [`begin`]).
pub struct Resampled<'a> {
    kernels: Kernels,
    /// The image after the horizontal pass (or the source when the width is unchanged).
    rows: &'a [u8],
    row_len: usize,
    /// Vertical weights; `None` when the height is unchanged.
    vertical: Option<&'a Weights>,
    band: &'a mut Vec<u8>,
}

impl Resampled<'_> {
    /// Output rows `y0..y1` (RGB8, contiguous).
    pub fn rows(&mut self, y0: usize, y1: usize) -> &[u8] {
        match self.vertical {
            None => &self.rows[y0 * self.row_len..y1 * self.row_len],
            Some(w) => {
                assert!(
                    y0 <= y1 && y1 <= w.bounds.len(),
                    "rows {y0}..{y1} out of range"
                );
                set_len(self.band, (y1 - y0) * self.row_len);
                rows_range(self.rows, self.row_len, w, y0..y1, self.band, self.kernels);
                self.band
            }
        }
    }
}

/// Starts resizing the HWC RGB8 image `src` from `(sh, sw)` to `(dh, dw)`
/// with Pillow's arithmetic: runs the horizontal pass (kept in `scratch`)
/// and returns the image whose rows compute the vertical pass on demand.
pub fn begin<'a>(
    kernels: Kernels,
    backend: Backend,
    scratch: &'a mut PillowScratch,
    src: &'a [u8],
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
    filter: Filter,
) -> Resampled<'a> {
    assert!(
        kernels.runs_here(),
        "{kernels:?} kernels need CPU features this machine lacks"
    );
    assert_eq!(src.len(), sh * sw * 3, "source size");
    let PillowScratch {
        transposed,
        horizontal,
        row,
        weights_w,
        weights_h,
        band,
        vertical_first: first_pass,
        #[cfg(target_arch = "x86_64")]
        hplan,
    } = scratch;
    // Pillow 13 runs the vertical pass first when the height shrinks much more
    // than the width: then both passes run here, whole, and no rows are left
    // to compute on demand.
    let vertical_first = backend == Backend::Pillow13
        && sh > dh
        && (sh - dh) as isize > 2 * (sw as isize - dw as isize)
        && dw != sw;
    let (input, in_rows): (&[u8], usize) = if vertical_first {
        let w = cached(weights_h, (sh, dh, filter, backend));
        set_len(first_pass, dh * sw * 3);
        rows_range(src, sw * 3, w, 0..dh, first_pass, kernels);
        (first_pass, dh)
    } else {
        (src, sh)
    };
    let rows: &[u8] = if dw == sw {
        input
    } else {
        set_len(horizontal, in_rows * dw * 3);
        let key = (sw, dw, filter, backend);
        // The direct AVX-512 pass, where this size has a plan.
        #[cfg(target_arch = "x86_64")]
        let direct = kernels == Kernels::Avx512 && {
            if hplan.as_ref().map(|(k, _)| *k) != Some(key) {
                let plan = super::avx512::HPlan::new(cached(weights_w, key), sw);
                *hplan = Some((key, plan));
            }
            match hplan {
                Some((_, Some(plan))) => {
                    // SAFETY: Avx512 runs here (asserted above).
                    unsafe { plan.run(input, in_rows, horizontal) };
                    true
                }
                _ => false,
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let direct = false;
        if !direct {
            // The row pass runs on the transposed image (rows = source
            // columns) and stores its result transposed back.
            transpose_rgb(input, (in_rows, sw), transposed);
            let w = cached(weights_w, key);
            transposed_pass(transposed, in_rows * 3, w, horizontal, row, dw, kernels);
        }
        horizontal
    };
    if vertical_first {
        return Resampled {
            kernels,
            rows,
            row_len: dw * 3,
            vertical: None,
            band,
        };
    }
    let vertical = (dh != sh).then(|| cached(weights_h, (sh, dh, filter, backend)));
    Resampled {
        kernels,
        rows,
        row_len: dw * 3,
        vertical,
        band,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pillow 13 resamples vertically first when the height shrinks by more
    /// than twice as many pixels as the width; otherwise, and on older Pillow,
    /// horizontally first. The two orders round differently in between.
    #[test]
    fn pillow13_pass_order() {
        let (sh, sw) = (90, 30);
        let src: Vec<u8> = (0..sh * sw * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let full = |backend, to: (usize, usize)| {
            let mut out = Vec::new();
            resize_with(
                Kernels::best(),
                backend,
                &mut PillowScratch::default(),
                &src,
                (sh, sw),
                to,
                Filter::Bicubic,
                &mut out,
            );
            out
        };
        let staged = |first: (usize, usize), to: (usize, usize)| {
            let mut sc = PillowScratch::default();
            let (mut mid, mut out) = (Vec::new(), Vec::new());
            resize_with(
                Kernels::best(),
                Backend::Pillow,
                &mut sc,
                &src,
                (sh, sw),
                first,
                Filter::Bicubic,
                &mut mid,
            );
            resize_with(
                Kernels::best(),
                Backend::Pillow,
                &mut sc,
                &mid,
                first,
                to,
                Filter::Bicubic,
                &mut out,
            );
            out
        };
        // 90x30 -> 34x34: the height loses 56 rows, the width gains 4 columns.
        let to = (34, 34);
        let v_first = staged((34, 30), to);
        let h_first = staged((90, 34), to);
        assert_ne!(v_first, h_first, "the case must tell the orders apart");
        assert_eq!(full(Backend::Pillow13, to), v_first);
        assert_eq!(full(Backend::Pillow, to), h_first);
        // 90x30 -> 70x10: the height loses 20, the width 20 (not twice as many): horizontal first.
        assert_eq!(
            full(Backend::Pillow13, (70, 10)),
            staged((90, 10), (70, 10))
        );
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(300, 336), (300, 224), (7, 336), (1, 56), (300, 14400)] {
            let w = Weights::new(i, o, Filter::Bicubic);
            for (n, &(start, count)) in w.bounds.iter().enumerate() {
                assert!(start + count <= i && count > 0);
                let s: i64 = w.weights[n * w.window..][..count]
                    .iter()
                    .map(|&k| k as i64)
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= count as i64,
                    "{i}->{o} at {n}: {s}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_rows_equal_portable_rows() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let w = Weights::new(300, 336, Filter::Bicubic);
        for row_len in [1, 7, 8, 31, 32, 45, 900, 1008] {
            let src: Vec<u8> = (0..300 * row_len).map(|i| (i * 7919 % 251) as u8).collect();
            for (i, &(start, count)) in w.bounds.iter().enumerate().step_by(17) {
                let taps = (start, &w.weights[i * w.window..][..count], w.precision);
                let (mut fast, mut slow) = (vec![0u8; row_len], vec![0u8; row_len]);
                row_of(&src, row_len, taps, &mut fast, true);
                row_of_portable(&src, row_len, taps, &mut slow, 0);
                assert_eq!(fast, slow, "row_len {row_len}, output row {i}");
            }
        }
    }

    #[test]
    fn transpose_round_trip() {
        let src: Vec<u8> = (0..5 * 7 * 3).map(|v| v as u8).collect();
        let (mut t, mut back) = (Vec::new(), Vec::new());
        transpose_rgb(&src, (5, 7), &mut t);
        assert_eq!(&t[3..6], &src[7 * 3..7 * 3 + 3]);
        transpose_rgb(&t, (7, 5), &mut back);
        assert_eq!(back, src);
    }

    #[test]
    fn upscale_of_step_overshoots_and_clips() {
        // A 0/255 step: bicubic rings next to the edge and is clipped to 0..=255.
        let src: Vec<u8> = (0..8)
            .flat_map(|x| [if x < 4 { 0u8 } else { 255 }; 3])
            .collect();
        let mut out = Vec::new();
        resize(
            &mut PillowScratch::default(),
            &src,
            (1, 8),
            (1, 16),
            Filter::Bicubic,
            &mut out,
        );
        let red: Vec<u8> = out.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(red[0], 0);
        assert_eq!(red[15], 255);
        assert!(red.windows(2).all(|p| p[0] <= p[1]), "{red:?}");
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..len)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Mostly extremes: sharp edges make the filters overshoot and clip.
                match (s >> 60) % 4 {
                    0 => 0,
                    1 => 255,
                    _ => ((s >> 33) as usize ^ i) as u8,
                }
            })
            .collect()
    }

    /// Every kernel set this CPU runs gives the portable kernels' bytes, for
    /// up- and downscaling, windows wider than 64 bytes (no direct horizontal
    /// plan), tiny and odd sizes, and every filter.
    #[test]
    fn all_kernels_give_the_same_bytes() {
        let sizes = [
            ((300, 300), (336, 336)),
            ((300, 300), (308, 308)),
            ((300, 300), (224, 224)),
            ((300, 300), (384, 384)),
            ((301, 299), (338, 336)),
            ((7, 300), (336, 14400)),
            ((1, 1), (56, 56)),
            ((640, 480), (224, 224)),
            ((33, 1000), (40, 37)),
            ((5, 9), (13, 4)),
            ((300, 300), (300, 336)),
            ((300, 300), (336, 300)),
            ((300, 300), (200, 200)),
            ((300, 300), (150, 150)),
        ];
        let filters = [
            Filter::Bicubic,
            Filter::Bilinear,
            Filter::Lanczos,
            Filter::Box,
            Filter::Hamming,
        ];
        let kernels = Kernels::available();
        for (n, &(src_size, dst_size)) in sizes.iter().enumerate() {
            let src = noise(src_size.0 * src_size.1 * 3, n as u64 + 1);
            for (&filter, backend) in filters
                .iter()
                .flat_map(|f| [(f, Backend::Pillow), (f, Backend::Torchvision)])
            {
                let mut reference = Vec::new();
                let portable = Kernels::Portable;
                let mut scratch = PillowScratch::default();
                let (s, d) = (src_size, dst_size);
                resize_with(
                    portable,
                    backend,
                    &mut scratch,
                    &src,
                    s,
                    d,
                    filter,
                    &mut reference,
                );
                assert_eq!(reference.len(), dst_size.0 * dst_size.1 * 3);
                if backend == Backend::Torchvision {
                    // Independent check of the torchvision weights: fast_image_resize.
                    let mut crate_out = crate::preprocess::resize::reference::Scratch::new();
                    crate::preprocess::resize::reference::resize_rgb8(
                        &mut crate_out,
                        &src,
                        s,
                        d,
                        filter,
                        backend,
                    )
                    .unwrap();
                    assert!(
                        crate_out.resized == reference,
                        "torchvision weights differ from fast_image_resize for {s:?} -> {d:?} {filter:?}"
                    );
                }
                for &k in &kernels {
                    // A scratch reused across sizes checks the cached weights and plans too.
                    let mut out = Vec::new();
                    let mut scratch = PillowScratch::default();
                    for _ in 0..2 {
                        resize_with(k, backend, &mut scratch, &src, s, d, filter, &mut out);
                        assert!(
                            out == reference,
                            "{k:?} differs from Portable for {s:?} -> {d:?} {filter:?} {backend:?}"
                        );
                    }
                }
            }
        }
    }
}
