//! Writing a resized RGB8 image into the model's float layout: a per-channel
//! affine map does rescale + normalize in one step, the crop (with zero
//! padding) is an offset, and Qwen2-VL's patch order is computed in place.

/// Per-channel affine map from an 8-bit value to the model input value,
/// `v * scale[c] + bias[c]` = `(v * rescale - mean[c]) / std[c]`.
///
/// An affine map (not a lookup table) so that the conversion vectorizes; its
/// float32 rounding differs from the reference's by a few ulp (< 1e-6).
pub struct ValueTable {
    scale: [f32; 3],
    bias: [f32; 3],
    /// bfloat16 outputs may use the AVX-512 BF16 conversion: the CPU has it
    /// and it is exact for this map ([`ValueTable::bf16_instruction_exact`]).
    /// Only the x86-64 kernels read it.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    bf16_instruction: bool,
}

impl ValueTable {
    /// Builds the map; `rescale` / `mean_std` are `None` when the processor
    /// skips that step.
    pub fn new(rescale: Option<f64>, mean_std: Option<([f64; 3], [f64; 3])>) -> Self {
        let r = rescale.unwrap_or(1.0);
        let (mean, std) = mean_std.unwrap_or(([0.0; 3], [1.0; 3]));
        let table = Self {
            scale: std::array::from_fn(|c| (r / std[c]) as f32),
            bias: std::array::from_fn(|c| (-mean[c] / std[c]) as f32),
            bf16_instruction: false,
        };
        #[cfg(target_arch = "x86_64")]
        let table = Self {
            bf16_instruction: std::arch::is_x86_feature_detected!("avx512bf16")
                && table.bf16_instruction_exact(),
            ..table
        };
        table
    }

    /// The same map without the AVX-512 BF16 conversion (the emulated rounding
    /// everywhere; the tests compare the two).
    #[cfg(test)]
    fn without_bf16_instruction(mut self) -> Self {
        self.bf16_instruction = false;
        self
    }

    /// True when every value of the map is zero or a normal float: the
    /// AVX-512 BF16 conversion (round to nearest even, subnormals to zero)
    /// then gives the same bits as [`Bf16::from_f32`] for every value the
    /// writers produce (all of them are the map's 3 x 256 values).
    pub fn bf16_instruction_exact(&self) -> bool {
        (0..3).all(|c| {
            (0..=255u8).all(|v| {
                let x = self.get(c, v);
                x == 0.0 || x.is_normal()
            })
        })
    }

    #[inline(always)]
    fn get(&self, c: usize, v: u8) -> f32 {
        v as f32 * self.scale[c] + self.bias[c]
    }

    #[inline(always)]
    fn out<T: OutValue>(&self, c: usize, v: u8) -> T {
        T::from_f32(self.get(c, v))
    }
}

/// An element type of `pixel_values`: float32, or bfloat16 stored as its bits
/// (what a bf16 model takes, half the memory traffic of float32).
pub trait OutValue: Copy + Send + Sync + 'static {
    /// Which type this is (for the vector stores).
    const KIND: OutKind;
    /// The value nearest to `v` (round to nearest even).
    fn from_f32(v: f32) -> Self;
}

/// The element types [`OutValue`] is implemented for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    F32,
    Bf16,
}

impl OutValue for f32 {
    const KIND: OutKind = OutKind::F32;
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

/// A bfloat16 value as its 16 bits (the upper half of a float32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct Bf16(pub u16);

impl OutValue for Bf16 {
    const KIND: OutKind = OutKind::Bf16;
    /// Round to nearest even, as torch's `float32 -> bfloat16` conversion (inputs are finite here).
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        let bits = v.to_bits();
        Bf16(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16)
    }
}

/// Where the crop window sits on the resized image: the first source row and
/// column of the window, negative when the window is larger than the image
/// (the reference pads with zeros before rescaling, so padded pixels read as
/// value 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub top: isize,
    pub left: isize,
    pub height: usize,
    pub width: usize,
}

/// Rows of a resized RGB8 image, handed out band by band (the vertical pass
/// runs for the rows asked for, so each band is consumed while in cache).
pub trait RowSource {
    /// Rows `y0..y1`, contiguous, 3 bytes per pixel.
    fn rows(&mut self, y0: usize, y1: usize) -> &[u8];
}

/// A whole image already in memory as a [`RowSource`].
pub struct ImageRows<'a> {
    pub image: &'a [u8],
    /// Bytes per row (3 x width).
    pub row_len: usize,
}

impl RowSource for ImageRows<'_> {
    fn rows(&mut self, y0: usize, y1: usize) -> &[u8] {
        &self.image[y0 * self.row_len..y1 * self.row_len]
    }
}

impl RowSource for super::pillow::Resampled<'_> {
    fn rows(&mut self, y0: usize, y1: usize) -> &[u8] {
        super::pillow::Resampled::rows(self, y0, y1)
    }
}

/// Output rows written per band of the channel-first layout (in-process A/B
/// on CLIP-336 and SigLIP-224: 1 row 30 % slower than 8, 16 to a whole
/// image 2-4 % faster than 8; 32 keeps the band in L1/L2).
const BAND: usize = 32;

/// Writes `[3, window.height, window.width]` channel-first values of the HWC
/// image behind `rows` (size `h` x `w`) into `out`.
pub fn write_chw<T: OutValue, R: RowSource + ?Sized>(
    rows: &mut R,
    hw: (usize, usize),
    window: Window,
    table: &ValueTable,
    out: &mut [T],
) {
    write_chw_with(Convert::best(), rows, hw, window, table, out)
}

/// [`write_chw`] with the given conversion (which this CPU must run).
pub fn write_chw_with<T: OutValue, R: RowSource + ?Sized>(
    simd: Convert,
    rows: &mut R,
    hw: (usize, usize),
    window: Window,
    table: &ValueTable,
    out: &mut [T],
) {
    chw::<T, R, false>(simd, rows, hw, window, table, out)
}

/// [`write_chw`] for outputs larger than the caches: whole rows go out with
/// streaming stores where they start on a vector boundary (no read of each
/// line before it is written).
pub fn write_chw_streaming<T: OutValue, R: RowSource + ?Sized>(
    rows: &mut R,
    hw: (usize, usize),
    window: Window,
    table: &ValueTable,
    out: &mut [T],
) {
    chw::<T, R, true>(Convert::best(), rows, hw, window, table, out);
    stream_fence();
}

fn chw<T: OutValue, R: RowSource + ?Sized, const STREAM: bool>(
    simd: Convert,
    rows: &mut R,
    (h, w): (usize, usize),
    window: Window,
    table: &ValueTable,
    out: &mut [T],
) {
    let plane = window.height * window.width;
    assert_eq!(out.len(), 3 * plane, "write_chw: output size");
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    let source_row = |y: usize| y as isize + window.top;
    let clamp = |sy: isize| sy.clamp(0, h as isize) as usize;
    for y0 in (0..window.height).step_by(BAND) {
        let y1 = (y0 + BAND).min(window.height);
        let (s0, s1) = (clamp(source_row(y0)), clamp(source_row(y1)));
        let band: &[u8] = if s1 > s0 { rows.rows(s0, s1) } else { &[] };
        for y in y0..y1 {
            let row_out = y * window.width..(y + 1) * window.width;
            let sy = source_row(y);
            let src = (sy >= 0 && (sy as usize) < h)
                .then(|| &band[(sy as usize - s0) * w * 3..][..w * 3]);
            let dst = [
                &mut r_plane[row_out.clone()],
                &mut g_plane[row_out.clone()],
                &mut b_plane[row_out],
            ];
            write_row::<T, STREAM>(simd, src, window.left, table, dst);
        }
    }
}

/// Writes the pixels `left .. left + width` of the RGB8 row `src` (`None`:
/// a row outside the image) as channel rows `dst` (`width` values each);
/// pixels outside the row read as zeros, as the references pad before rescaling.
#[inline]
fn write_row<T: OutValue, const STREAM: bool>(
    simd: Convert,
    src: Option<&[u8]>,
    left: isize,
    table: &ValueTable,
    dst: [&mut [T]; 3],
) {
    let width = dst[0].len();
    let w = src.map_or(0, |s| s.len() / 3) as isize;
    // Inside columns x0..x1 of the output row (empty when the row is outside).
    let x0 = (-left).clamp(0, width as isize) as usize;
    let x1 = (w - left).clamp(x0 as isize, width as isize) as usize;
    let [r, g, b] = dst;
    for (c, d) in [&mut *r, &mut *g, &mut *b].into_iter().enumerate() {
        let zero = table.out(c, 0);
        d[..x0].fill(zero);
        d[x1..].fill(zero);
    }
    if let (Some(src), true) = (src, x1 > x0) {
        let from = (left + x0 as isize) as usize * 3;
        let px = &src[from..from + (x1 - x0) * 3];
        simd.row_into::<T, STREAM>(
            px,
            table,
            [&mut r[x0..x1], &mut g[x0..x1], &mut b[x0..x1]],
            0,
            1,
            0,
        );
    }
}

/// LLaVA-NeXT's tiling of one resized image: the `h` x `w` image behind
/// `rows`, pasted at `(top, left)` into a zero canvas of `grid.0 * tile` x
/// `grid.1 * tile`, cut into `tile` x `tile` tiles in row-major order, each
/// written channel-first (`[grid.0 * grid.1, 3, tile, tile]` values into `out`).
/// One band of canvas rows feeds every tile column, so each resized row is
/// computed once. `stream`: whole vectors go out as streaming stores (outputs
/// larger than the caches, see [`write_chw_streaming`]; AVX-512 only).
#[allow(clippy::too_many_arguments)]
pub fn write_tiles<T: OutValue, R: RowSource + ?Sized>(
    simd: Convert,
    stream: bool,
    rows: &mut R,
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    tile: usize,
    grid: (usize, usize),
    table: &ValueTable,
    out: &mut [T],
) {
    let plane = tile * tile;
    assert_eq!(
        out.len(),
        grid.0 * grid.1 * 3 * plane,
        "write_tiles: output size"
    );
    assert!(
        top + h <= grid.0 * tile && left + w <= grid.1 * tile,
        "write_tiles: image exceeds the canvas"
    );
    let mut tiles: Vec<[&mut [T]; 3]> = out
        .chunks_exact_mut(3 * plane)
        .map(|t| {
            let (r, rest) = t.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            [r, g, b]
        })
        .collect();
    let canvas_h = grid.0 * tile;
    let clamp = |y: usize| y.saturating_sub(top).min(h);
    for y0 in (0..canvas_h).step_by(BAND) {
        let y1 = (y0 + BAND).min(canvas_h);
        let (s0, s1) = (clamp(y0), clamp(y1));
        let band: &[u8] = if s1 > s0 { rows.rows(s0, s1) } else { &[] };
        for y in y0..y1 {
            let src = (y >= top && y - top < h).then(|| &band[(y - top - s0) * w * 3..][..w * 3]);
            let (ty, py) = (y / tile, y % tile);
            for tx in 0..grid.1 {
                let [r, g, b] = &mut tiles[ty * grid.1 + tx];
                let row = py * tile..(py + 1) * tile;
                let dst = [&mut r[row.clone()], &mut g[row.clone()], &mut b[row]];
                let left = (tx * tile) as isize - left as isize;
                if stream {
                    write_row::<T, true>(simd, src, left, table, dst);
                } else {
                    write_row::<T, false>(simd, src, left, table, dst);
                }
            }
        }
    }
    if stream {
        stream_fence();
    }
}

/// How a row of RGB8 pixels becomes three channel rows of output values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convert {
    /// Plain Rust.
    Portable,
    /// AVX-512 (BW + VL + VBMI): 16 pixels per step, one byte permutation.
    Avx512,
}

impl Convert {
    /// Every conversion this CPU runs.
    pub fn available() -> Vec<Self> {
        let mut all = vec![Convert::Portable];
        if Self::best() == Convert::Avx512 {
            all.push(Convert::Avx512);
        }
        all
    }

    /// The fastest conversion this CPU runs.
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
        {
            return Convert::Avx512;
        }
        Convert::Portable
    }

    /// Converts the pixels of `src` (3 bytes each): channel `c` of pixel `i`
    /// goes to `dst[c][offset + k * stride + i]` for each copy `k < copies`
    /// (Qwen2-VL repeats a frame over its temporal slots). With `STREAM`, whole
    /// vectors at addresses aligned to their size go out as streaming stores
    /// (the caller fences). `self` must be in [`Convert::available`].
    #[inline(always)]
    pub fn row_into<T: OutValue, const STREAM: bool>(
        self,
        src: &[u8],
        table: &ValueTable,
        dst: [&mut [T]; 3],
        offset: usize,
        copies: usize,
        stride: usize,
    ) {
        let n = src.len() / 3;
        assert!(src.len() == 3 * n && copies > 0);
        let end = offset + (copies - 1) * stride + n;
        assert!(
            dst.iter().all(|d| d.len() >= end),
            "row_into: destination size"
        );
        #[cfg(target_arch = "x86_64")]
        if self == Convert::Avx512 {
            let [r, g, b] = dst;
            let at = |d: &mut [T]| d[offset..].as_mut_ptr();
            if T::KIND == OutKind::Bf16 && table.bf16_instruction {
                // SAFETY: as below; bf16_instruction is set only where the CPU has
                // AVX-512 BF16 and T is bfloat16 (checked).
                unsafe {
                    convert_avx512_bf16::<STREAM>(
                        src.as_ptr(),
                        n,
                        table,
                        [at(r), at(g), at(b)].map(|p| p as *mut u16),
                        copies,
                        stride,
                    )
                };
                return;
            }
            // SAFETY: Avx512 is chosen only when the CPU has the features (best());
            // src holds n pixels and each copy's n values lie inside dst[c] (asserted).
            unsafe {
                convert_avx512::<T, STREAM>(
                    src.as_ptr(),
                    n,
                    table,
                    [at(r), at(g), at(b)],
                    copies,
                    stride,
                )
            };
            return;
        }
        for (c, d) in dst.into_iter().enumerate() {
            for (i, px) in src.chunks_exact(3).enumerate() {
                let v = table.out(c, px[c]);
                for k in 0..copies {
                    d[offset + k * stride + i] = v;
                }
            }
        }
    }
}

/// Stores 16 (or the first `mask` lanes of 16) output values.
///
/// # Safety
/// AVX-512F/BW/VL; `dst` valid for the lanes in `mask`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn store16<T: OutValue, const STREAM: bool>(
    dst: *mut T,
    mask: u16,
    v: std::arch::x86_64::__m512,
) {
    use std::arch::x86_64::*;
    let stream = STREAM && mask == u16::MAX && (dst as usize).is_multiple_of(16 * size_of::<T>());
    match T::KIND {
        OutKind::F32 if stream => _mm512_stream_ps(dst as *mut f32, v),
        OutKind::F32 => _mm512_mask_storeu_ps(dst as *mut f32, mask, v),
        OutKind::Bf16 => {
            // Round to nearest even, as Bf16::from_f32.
            let bits = _mm512_castps_si512(v);
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
            let rounded = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), odd);
            let halves = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(rounded));
            if stream {
                _mm256_stream_si256(dst as *mut __m256i, halves)
            } else {
                _mm256_mask_storeu_epi16(dst as *mut i16, mask, halves)
            }
        }
    }
}

/// Byte `16c + i` of this permutation of 16 RGB pixels is channel `c` of pixel `i`.
#[cfg(target_arch = "x86_64")]
static DEINTERLEAVE: [u8; 64] = {
    let mut index = [0u8; 64];
    let mut j = 0;
    while j < 48 {
        index[j] = (3 * (j % 16) + j / 16) as u8;
        j += 1;
    }
    index
};

/// Converts `n` RGB8 pixels at `src` into channel rows at `dst[c]`, each
/// written `copies` times, `copy_stride` values apart.
///
/// # Safety
/// AVX-512F/BW/VL/VBMI; `src` readable for `3 * n` bytes; each `dst[c] + k *
/// copy_stride` (k < copies) writable for `n` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn convert_avx512<T: OutValue, const STREAM: bool>(
    src: *const u8,
    n: usize,
    table: &ValueTable,
    dst: [*mut T; 3],
    copies: usize,
    copy_stride: usize,
) {
    let pixels = Pixels16::new(table);
    let mut x = 0;
    while x < n {
        let m = 16.min(n - x);
        let store: u16 = ((1u32 << m) - 1) as u16;
        // SAFETY: the masks keep loads inside src[3x..3n] and stores inside the
        // caller's n values per destination.
        let values = pixels.values(src.add(3 * x), m);
        for (c, v) in values.into_iter().enumerate() {
            for k in 0..copies {
                store16::<T, STREAM>(dst[c].add(k * copy_stride + x), store, v);
            }
        }
        x += m;
    }
}

/// [`convert_avx512`] for bfloat16 with the AVX-512 BF16 conversion: 32
/// pixels per step, each channel's 32 values one 64-byte store (with
/// `STREAM`, streaming where the step is whole and starts on a line or half line).
///
/// # Safety
/// As [`convert_avx512`], plus AVX-512 BF16; `dst` holds bfloat16 bits; the
/// table passes [`ValueTable::bf16_instruction_exact`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512bf16")]
unsafe fn convert_avx512_bf16<const STREAM: bool>(
    src: *const u8,
    n: usize,
    table: &ValueTable,
    dst: [*mut u16; 3],
    copies: usize,
    copy_stride: usize,
) {
    use std::arch::x86_64::*;
    let pixels = Pixels16::new(table);
    // A row that starts on a half line (CLIP-336: every other row) takes 16
    // pixels first, so that the following steps start on whole lines (the
    // three channel rows share their offset from a line in the usual layouts;
    // where they do not, the stores below stay correct, only less streamed).
    let first = if (dst[0] as usize) % 64 == 32 { 16 } else { 32 };
    let mut x = 0;
    while x < n {
        let m = if x == 0 { first } else { 32 }.min(n - x);
        let (m0, m1) = (m.min(16), m.saturating_sub(16));
        // SAFETY: the masks keep loads inside src[3x..3n] (m1 = 0: nothing read).
        let low = pixels.values(src.add(3 * x), m0);
        let high = pixels.values(src.add(3 * (x + 16).min(n)), m1);
        for c in 0..3 {
            let pair: __m512bh = _mm512_cvtne2ps_pbh(high[c], low[c]);
            let bits = std::mem::transmute::<__m512bh, __m512i>(pair);
            for k in 0..copies {
                let at = dst[c].add(k * copy_stride + x);
                if STREAM && m == 32 && (at as usize).is_multiple_of(64) {
                    _mm512_stream_si512(at as *mut __m512i, bits);
                    continue;
                }
                // By halves of 16 values: whole halves on a half line stream too
                // (rows that start mid-line, as CLIP-336's odd rows, and a row's last
                // 16 values; a plain store into a line being streamed would flush it).
                let halves = [
                    _mm512_castsi512_si256(bits),
                    _mm512_extracti64x4_epi64::<1>(bits),
                ];
                for (half, v) in halves.into_iter().enumerate() {
                    let lanes = m.saturating_sub(16 * half).min(16);
                    let at = at.add(16 * half);
                    if STREAM && lanes == 16 && (at as usize).is_multiple_of(32) {
                        _mm256_stream_si256(at as *mut __m256i, v);
                    } else if lanes > 0 {
                        _mm256_mask_storeu_epi16(at as *mut i16, ((1u32 << lanes) - 1) as u16, v);
                    }
                }
            }
        }
        x += m;
    }
}

/// Rescale + normalize of up to 16 RGB8 pixels into three channel vectors,
/// its constants set up once per call of the conversion kernels.
#[cfg(target_arch = "x86_64")]
struct Pixels16 {
    index: std::arch::x86_64::__m512i,
    scale: [std::arch::x86_64::__m512; 3],
    bias: [std::arch::x86_64::__m512; 3],
}

#[cfg(target_arch = "x86_64")]
impl Pixels16 {
    /// # Safety
    /// AVX-512F/BW/VL/VBMI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    #[inline]
    unsafe fn new(table: &ValueTable) -> Self {
        use std::arch::x86_64::*;
        Pixels16 {
            index: _mm512_loadu_si512(DEINTERLEAVE.as_ptr() as *const __m512i),
            scale: table.scale.map(|s| _mm512_set1_ps(s)),
            bias: table.bias.map(|b| _mm512_set1_ps(b)),
        }
    }

    /// Channel `c` of pixels `0..m` of `src` in lanes `0..m` of vector `c`.
    ///
    /// # Safety
    /// AVX-512F/BW/VL/VBMI; `src` readable for `3 * m` bytes, `m <= 16`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    #[inline]
    unsafe fn values(&self, src: *const u8, m: usize) -> [std::arch::x86_64::__m512; 3] {
        use std::arch::x86_64::*;
        let v = _mm512_maskz_loadu_epi8((1u64 << (3 * m)) - 1, src as *const i8);
        let planar = _mm512_permutexvar_epi8(self.index, v);
        let lanes = [
            _mm512_castsi512_si128(planar),
            _mm512_extracti32x4_epi32::<1>(planar),
            _mm512_extracti32x4_epi32::<2>(planar),
        ];
        let mut out = [_mm512_setzero_ps(); 3];
        for c in 0..3 {
            let f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lanes[c]));
            // mul then add (no FMA): the same float rounding as the portable path.
            out[c] = _mm512_add_ps(_mm512_mul_ps(f, self.scale[c]), self.bias[c]);
        }
        out
    }
}

/// Prefetches (for writing) the cache lines of `len` bytes at `offset` of
/// the `total`-byte buffer at address `base`; parts outside it are skipped.
#[inline(always)]
fn prefetch_for_write(base: usize, total: usize, offset: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
        let end = (offset + len).min(total);
        for at in (offset..end).step_by(64) {
            // SAFETY: prefetching has no effect on memory; the address is inside the buffer.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>((base + at) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (base, total, offset, len);
}

/// Qwen2-VL's patch geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGeometry {
    pub patch_size: usize,
    pub merge_size: usize,
    pub temporal_patch_size: usize,
}

impl PatchGeometry {
    /// Values per patch row: channels x temporal x patch x patch.
    pub fn row_len(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// Writes the HWC image behind `rows` (size `h` x `w`, both multiples of
/// patch x merge) as Qwen2-VL patch rows into `out`, `[grid_h * grid_w, row_len]`.
///
/// Row order is (block row, block column, row in block, column in block) over
/// merge x merge blocks of patches; inside a row the order is (channel,
/// temporal copy, y, x). A single image fills every temporal slot with the
/// same frame, as the reference repeats it. One band of `merge x patch`
/// image rows makes one block row.
pub fn write_qwen_patches<T: OutValue, R: RowSource + ?Sized>(
    rows: &mut R,
    hw: (usize, usize),
    g: PatchGeometry,
    table: &ValueTable,
    out: &mut [T],
) {
    write_qwen_patches_with(Convert::best(), rows, hw, g, table, out)
}

/// [`write_qwen_patches`] with the given conversion (which this CPU must run).
pub fn write_qwen_patches_with<T: OutValue, R: RowSource + ?Sized>(
    simd: Convert,
    rows: &mut R,
    hw: (usize, usize),
    g: PatchGeometry,
    table: &ValueTable,
    out: &mut [T],
) {
    qwen_patches(simd, rows, hw, g, table, out)
}

/// [`write_qwen_patches`] for outputs larger than the caches: each patch row
/// is laid out as bytes in L1 ([`PatchRowBytes`]), then converted cache line
/// by cache line, each whole line going out as one streaming store (no read
/// of the line before it is written). Falls back to the direct writes on
/// CPUs without AVX-512 and for patches of more than 16 x 16 pixels.
pub fn write_qwen_patches_streaming<T: OutValue, R: RowSource + ?Sized>(
    rows: &mut R,
    hw: (usize, usize),
    g: PatchGeometry,
    table: &ValueTable,
    out: &mut [T],
) {
    match Convert::best() {
        #[cfg(target_arch = "x86_64")]
        Convert::Avx512 => qwen_patches_streaming(rows, hw, g, table, out),
        simd => qwen_patches(simd, rows, hw, g, table, out),
    }
}

fn qwen_patches<T: OutValue, R: RowSource + ?Sized>(
    simd: Convert,
    rows: &mut R,
    (h, w): (usize, usize),
    g: PatchGeometry,
    table: &ValueTable,
    out: &mut [T],
) {
    let (p, m) = (g.patch_size, g.merge_size);
    let (grid_h, grid_w) = (h / p, w / p);
    let row_len = g.row_len();
    assert_eq!(
        out.len(),
        grid_h * grid_w * row_len,
        "write_qwen_patches: output size"
    );
    let (out_at, out_bytes) = (out.as_ptr() as usize, std::mem::size_of_val(out));
    let row_bytes = row_len * std::mem::size_of::<T>();
    let mut out_rows = out.chunks_exact_mut(row_len);
    for bh in 0..grid_h / m {
        let band = rows.rows(bh * m * p, (bh + 1) * m * p);
        for bw in 0..grid_w / m {
            for mh in 0..m {
                for mw in 0..m {
                    let row = out_rows.next().expect("row count follows from the grid");
                    // Ask for the lines of the row after next now: the output goes to
                    // memory, and the short masked stores below would otherwise wait
                    // for each line (measured: 26 -> 20 ms per 64 images; the same for
                    // the channel-first rows, whose full-line stores stream well, was slower).
                    let here = row.as_ptr() as usize - out_at;
                    prefetch_for_write(out_at, out_bytes, here + 2 * row_bytes, row_bytes);
                    patch_row(
                        simd,
                        &band[(mh * p * w + (bw * m + mw) * p) * 3..],
                        w,
                        g,
                        table,
                        row,
                    );
                }
            }
        }
    }
}

/// [`write_qwen_patches_streaming`] on AVX-512.
#[cfg(target_arch = "x86_64")]
fn qwen_patches_streaming<T: OutValue, R: RowSource + ?Sized>(
    rows: &mut R,
    (h, w): (usize, usize),
    g: PatchGeometry,
    table: &ValueTable,
    out: &mut [T],
) {
    let (p, m) = (g.patch_size, g.merge_size);
    let (grid_h, grid_w) = (h / p, w / p);
    let row_len = g.row_len();
    assert_eq!(
        out.len(),
        grid_h * grid_w * row_len,
        "write_qwen_patches: output size"
    );
    if !(4..=16).contains(&p) || row_len > MAX_ROW_BYTES {
        // Rows of more than 16 pixels, patches of fewer than 16 values (a step
        // could cross two segment ends), or patch rows larger than the layout.
        return qwen_patches(Convert::Avx512, rows, (h, w), g, table, out);
    }
    let mut image = PatchRowBytes::new(table, g);
    let bf16 = T::KIND == OutKind::Bf16 && table.bf16_instruction;
    let mut out_rows = out.chunks_exact_mut(row_len);
    for bh in 0..grid_h / m {
        let band = rows.rows(bh * m * p, (bh + 1) * m * p);
        for bw in 0..grid_w / m {
            for mh in 0..m {
                for mw in 0..m {
                    let row = out_rows.next().expect("row count follows from the grid");
                    let src = &band[(mh * p * w + (bw * m + mw) * p) * 3..];
                    assert!(src.len() >= (p - 1) * w * 3 + p * 3);
                    // SAFETY: AVX-512 (the caller checked Convert::best()); src holds
                    // the patch's p rows of p pixels (asserted); row is one patch row.
                    unsafe {
                        image.fill(src.as_ptr(), w * 3);
                        if bf16 {
                            image.write_row_bf16(row);
                        } else {
                            image.write_row(row);
                        }
                    }
                }
            }
        }
    }
    stream_fence();
}

/// Largest Qwen2-VL patch row [`PatchRowBytes`] holds (values; Qwen2-VL: 1176).
#[cfg(target_arch = "x86_64")]
const MAX_ROW_BYTES: usize = 3 * 2 * 16 * 16;

/// Padding before and after the values of [`PatchRowBytes`]: a 16-value step
/// may start up to 15 values before the row and end up to 15 after it.
#[cfg(target_arch = "x86_64")]
const EDGE: usize = 16;

/// One Qwen2-VL patch as three planar byte blocks (channel c: `p * p` bytes,
/// row-major), and per value of the patch row (channel, temporal copy, y, x)
/// its multiplier and offset: value `e` of the row is `scale[e] * byte + bias[e]`,
/// the byte taken from the plane of `e`'s channel at `e`'s place in its
/// segment (a temporal copy reads the same plane again). Laying out the patch
/// costs one 16-byte store per image row and channel into L1; then any 16
/// consecutive values of the row are one load (two and a blend where they
/// cross from one segment into the next), one widening, one multiply, one
/// add, and the row goes out cache line by cache line, each whole line as one
/// streaming store, whatever the row's offset from a line.
///
/// In-process A/B on 64 Qwen2-VL images (blocks of five batches): with each
/// temporal copy's bytes stored separately, against the former writer (floats
/// assembled in L1 with 14-lane masked stores, then copied out with streaming
/// stores), whole pipeline, 24 runs of 60 batches: median faster in 21 runs,
/// by 0.45 ms (3 %). Storing each plane once and walking the row segment by
/// segment (this form): the writer alone 4.5-4.8 vs 5.8-7.2 ms per batch
/// (about the streaming floor of 146 MB here), the pipeline 11.4-16.4 vs
/// 13.3-18.1 ms, faster in each of five alternations (the small stores that
/// lay out a patch commit behind the streaming stores, so each one counts);
/// bfloat16 with the BF16 instruction through the same walk: the writer alone
/// 4.5-5.4 ms (8.5-10.8 before), against 8.2-9.2 with the emulated rounding.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct PatchRowBytes {
    /// `EDGE` bytes, then the planes (`3 * p * p` bytes), then padding.
    bytes: [u8; EDGE + MAX_ROW_BYTES + EDGE],
    scale: [f32; EDGE + MAX_ROW_BYTES + EDGE],
    bias: [f32; EDGE + MAX_ROW_BYTES + EDGE],
    /// Per segment (channel c, temporal copy k) of the row, and one more:
    /// where value `e` of that segment finds its byte, `e + plane[s]` from the
    /// first plane (`c * p * p - s * p * p`).
    plane: Vec<isize>,
    g: PatchGeometry,
}

/// The walk over a patch row's values 16 at a time, from a start before or at
/// the row's first value: which segment the step starts in and where it ends.
#[cfg(target_arch = "x86_64")]
struct Steps {
    e: isize,
    segment: usize,
    end: isize,
}

#[cfg(target_arch = "x86_64")]
impl PatchRowBytes {
    /// The layout for `g` (`p * p >= 16`: a step crosses at most one segment
    /// boundary; `3 * t * p * p <= MAX_ROW_BYTES`).
    fn new(table: &ValueTable, g: PatchGeometry) -> Box<Self> {
        let seg = g.patch_size * g.patch_size;
        let len = g.row_len();
        assert!(len <= MAX_ROW_BYTES && seg >= 16);
        let t = g.temporal_patch_size;
        let segments = 3 * t;
        let plane = (0..=segments)
            .map(|s| {
                let s = s.min(segments - 1);
                ((s / t) * seg) as isize - (s * seg) as isize
            })
            .collect();
        let mut image = Box::new(PatchRowBytes {
            bytes: [0; EDGE + MAX_ROW_BYTES + EDGE],
            scale: [0.0; EDGE + MAX_ROW_BYTES + EDGE],
            bias: [0.0; EDGE + MAX_ROW_BYTES + EDGE],
            plane,
            g,
        });
        for e in 0..len {
            let c = e / (t * seg);
            image.scale[EDGE + e] = table.scale[c];
            image.bias[EDGE + e] = table.bias[c];
        }
        image
    }

    /// Puts the `p` x `p` RGB patch at `src` (rows `stride` bytes apart) in
    /// the planes.
    ///
    /// # Safety
    /// AVX-512F/BW/VL/VBMI; `src` readable for `(p - 1) * stride + 3 * p` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    unsafe fn fill(&mut self, src: *const u8, stride: usize) {
        use std::arch::x86_64::*;
        let p = self.g.patch_size;
        let seg = p * p;
        let index = _mm512_loadu_si512(DEINTERLEAVE.as_ptr() as *const __m512i);
        let base = self.bytes.as_mut_ptr().add(EDGE);
        let load = (1u64 << (3 * p)) - 1;
        let last: __mmask16 = ((1u32 << p) - 1) as u16;
        // A full store's spill ends inside its own plane only from 8 pixels on
        // ((p - 2) * p + 16 <= p * p); smaller patches store every row masked.
        let spill = p >= 8;
        for y in 0..p {
            let v = _mm512_maskz_loadu_epi8(load, src.add(y * stride) as *const i8);
            let planar = _mm512_permutexvar_epi8(index, v);
            let channels = [
                _mm512_castsi512_si128(planar),
                _mm512_extracti32x4_epi32::<1>(planar),
                _mm512_extracti32x4_epi32::<2>(planar),
            ];
            for (c, bytes) in channels.into_iter().enumerate() {
                let at = base.add(c * seg + y * p) as *mut __m128i;
                // Rows go in order: each full 16-byte store spills past its p
                // bytes into the next row's place, which the next store
                // overwrites; the plane's last row must not spill into the next
                // plane (written earlier).
                if spill && y + 1 < p {
                    _mm_storeu_si128(at, bytes);
                } else {
                    _mm_mask_storeu_epi8(at as *mut i8, last, bytes);
                }
            }
        }
    }

    /// Values `e..e + 16` of the row for the walk's next step (lanes before
    /// the row's start or after its end hold padding), and the step's start.
    ///
    /// # Safety
    /// AVX-512F/BW/VL/VBMI; `walk` inside the row (as [`PatchRowBytes::each_step`] keeps it).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    #[inline]
    unsafe fn next(&self, walk: &mut Steps) -> (isize, std::arch::x86_64::__m512) {
        use std::arch::x86_64::*;
        let e = walk.e;
        let base = self.bytes.as_ptr().add(EDGE);
        let mut bytes =
            _mm_loadu_si128(base.offset(e + self.plane[walk.segment]) as *const __m128i);
        if e + 16 > walk.end {
            // Lanes from `inside` on are the next segment's first values.
            let inside = (walk.end - e) as u32;
            let next = base.offset(e + self.plane[walk.segment + 1]);
            bytes = _mm_mask_blend_epi8(
                !((1u32 << inside) - 1) as u16,
                bytes,
                _mm_loadu_si128(next as *const __m128i),
            );
        }
        walk.e += 16;
        if walk.e >= walk.end {
            walk.segment += 1;
            walk.end += (self.g.patch_size * self.g.patch_size) as isize;
        }
        (e, self.convert(bytes, e))
    }

    /// Values `e..e + 16` of the row from their 16 bytes.
    ///
    /// # Safety
    /// AVX-512F/BW/VL/VBMI; `-16 < e < row_len`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    #[inline]
    unsafe fn convert(
        &self,
        bytes: std::arch::x86_64::__m128i,
        e: isize,
    ) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let at = (EDGE as isize + e) as usize;
        let f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
        // mul then add (no FMA): the same float rounding as the portable path.
        _mm512_add_ps(
            _mm512_mul_ps(f, _mm512_loadu_ps(self.scale.as_ptr().add(at))),
            _mm512_loadu_ps(self.bias.as_ptr().add(at)),
        )
    }

    /// Calls `emit(e, values e..e + 16)` for the row's steps in order, from
    /// `lead` rounded down to a multiple of 16 (or 0) to the row's end `len`
    /// (lanes before the start or past the end hold padding). Segment by
    /// segment: the steps inside one read one plane with no checks, the step
    /// across its end blends two.
    ///
    /// # Safety
    /// AVX-512F/BW/VL/VBMI; `len` is the geometry's row length.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    #[inline]
    unsafe fn each_step(
        &self,
        lead: isize,
        len: isize,
        mut emit: impl FnMut(isize, std::arch::x86_64::__m512),
    ) {
        use std::arch::x86_64::*;
        let seg = (self.g.patch_size * self.g.patch_size) as isize;
        let mut walk = Steps {
            e: lead - 16 * ((lead + 15) / 16),
            segment: 0,
            end: seg,
        };
        let base = self.bytes.as_ptr().add(EDGE);
        if walk.e < 0 {
            let (e, v) = self.next(&mut walk);
            emit(e, v);
        }
        while walk.e < len {
            let from = base.offset(self.plane[walk.segment]);
            let mut e = walk.e;
            while e + 16 <= walk.end {
                let bytes = _mm_loadu_si128(from.offset(e) as *const __m128i);
                emit(e, self.convert(bytes, e));
                e += 16;
            }
            walk.e = e;
            if walk.e == walk.end {
                walk.segment += 1;
                walk.end += seg;
            } else {
                let (e, v) = self.next(&mut walk);
                emit(e, v);
            }
        }
    }

    /// Converts the patch into `row`, 16 values per step at addresses
    /// aligned to `16 * size_of::<T>()`: the aligned whole steps as streaming
    /// stores, the partial ones at the two ends as masked stores.
    ///
    /// # Safety
    /// AVX-512F/BW/VL/VBMI; `row.len()` is the geometry's row length.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    unsafe fn write_row<T: OutValue>(&self, row: &mut [T]) {
        let len = row.len() as isize;
        debug_assert_eq!(row.len(), self.g.row_len());
        let size = std::mem::size_of::<T>();
        let step = 16 * size;
        // Values before the first aligned step.
        let lead = (((step - row.as_ptr() as usize % step) % step) / size) as isize;
        let dst = row.as_mut_ptr();
        self.each_step(lead, len, |e, v| {
            if e >= 0 && e + 16 <= len {
                store16::<T, true>(dst.offset(e), u16::MAX, v);
            } else {
                store16::<T, false>(dst.offset(e), inside_row(e, len), v);
            }
        });
    }

    /// [`PatchRowBytes::write_row`] for bfloat16 with the AVX-512 BF16
    /// conversion: 32 values per step, one 64-byte streaming store each
    /// (16 at a time, masked, at the row's ends).
    ///
    /// # Safety
    /// AVX-512F/BW/VL/VBMI/BF16; `row` holds bfloat16 values (`T::KIND` is
    /// `Bf16`), `row.len()` is the geometry's row length; the table passes
    /// [`ValueTable::bf16_instruction_exact`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512bf16")]
    unsafe fn write_row_bf16<T: OutValue>(&self, row: &mut [T]) {
        use std::arch::x86_64::*;
        debug_assert_eq!(T::KIND, OutKind::Bf16);
        let len = row.len() as isize;
        // Values before the first 64-byte line.
        let lead = (((64 - row.as_ptr() as usize % 64) % 64) / 2) as isize;
        let dst = row.as_mut_ptr() as *mut u16;
        // The first half of a whole line, waiting for the second.
        let mut low: Option<__m512> = None;
        self.each_step(lead, len, |e, v| {
            if let Some(first) = low.take() {
                let pair = std::mem::transmute::<__m512bh, __m512>(_mm512_cvtne2ps_pbh(v, first));
                _mm512_stream_ps(dst.offset(e - 16) as *mut f32, pair);
            } else if e >= lead && (e - lead) % 32 == 0 && e + 32 <= len {
                low = Some(v);
            } else {
                let bits = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
                _mm256_mask_storeu_epi16(dst.offset(e) as *mut i16, inside_row(e, len), bits);
            }
        });
    }
}

/// The lanes of the 16-value step at `e` that lie inside a row of `len` values.
#[cfg(target_arch = "x86_64")]
fn inside_row(e: isize, len: isize) -> u16 {
    let (first, past) = ((-e).max(0) as u32, (e + 16 - len).max(0) as u32);
    (u16::MAX << first) & (u16::MAX >> past)
}

/// One Qwen2-VL patch row from the `p` image rows starting at `src` (rows of
/// `w` RGB pixels; the patch is the first `p` pixels of each): channel blocks
/// of the temporal copies, each `p` rows of `p` values.
#[inline(always)]
fn patch_row<T: OutValue>(
    simd: Convert,
    src: &[u8],
    w: usize,
    g: PatchGeometry,
    table: &ValueTable,
    row: &mut [T],
) {
    let (p, t) = (g.patch_size, g.temporal_patch_size);
    assert!(src.len() >= (p - 1) * w * 3 + p * 3 && row.len() == g.row_len());
    #[cfg(target_arch = "x86_64")]
    if p <= 16 && matches!(simd, Convert::Avx512) {
        // SAFETY: Avx512 is only chosen on a CPU that has the features; the
        // reads and writes stay inside src and row (asserted above).
        unsafe { patch_row_avx512(src.as_ptr(), w * 3, p, t, table, row.as_mut_ptr()) };
        return;
    }
    let mut channels = row.chunks_exact_mut(t * p * p);
    let [r, g, b] = [(); 3].map(|_| channels.next().expect("3 channel blocks"));
    for py in 0..p {
        let px = &src[py * w * 3..][..p * 3];
        simd.row_into::<T, false>(px, table, [&mut *r, &mut *g, &mut *b], py * p, t, p * p);
    }
}

/// [`patch_row`] in one call, its constants set up once: a patch row has
/// `p` (14) pieces of `p` pixels, too short to pay a call and setup each
/// (in-process A/B: the whole Qwen2-VL batch 11-18 % faster than calling
/// [`Convert::row_into`] per piece).
///
/// # Safety
/// AVX-512F/BW/VL/VBMI; `p <= 16`; `src` readable for `(p - 1) * stride + 3 * p`
/// bytes; `dst` writable for `3 * t * p * p` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn patch_row_avx512<T: OutValue>(
    src: *const u8,
    stride: usize,
    p: usize,
    t: usize,
    table: &ValueTable,
    dst: *mut T,
) {
    let pixels = Pixels16::new(table);
    let store: u16 = ((1u32 << p) - 1) as u16;
    for py in 0..p {
        let values = pixels.values(src.add(py * stride), p);
        for (c, v) in values.into_iter().enumerate() {
            for k in 0..t {
                store16::<T, false>(dst.add((c * t + k) * p * p + py * p), store, v);
            }
        }
    }
}

/// Orders this thread's streaming stores before whatever it does next (they
/// are weakly ordered; the pool's join then publishes them).
fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence has no preconditions (SSE is part of x86_64).
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ValueTable {
        ValueTable::new(None, None)
    }

    /// `write` into a buffer starting `shift` values past a cache line gives `want`.
    fn check_at<T: OutValue + PartialEq + std::fmt::Debug>(
        want: &[T],
        shift: usize,
        write: impl FnOnce(&mut [T]),
    ) {
        let mut out = vec![T::from_f32(0.0); want.len() + 64];
        let at = out.as_ptr().align_offset(64) + shift;
        write(&mut out[at..at + want.len()]);
        assert_eq!(&out[at..at + want.len()], want, "shift {shift}");
    }

    /// LLaVA-NeXT tiling: a 3x4 image pasted at (1, 1) on a 4x6 canvas of
    /// zeros, cut into 2x2 tiles in row-major order, with every conversion.
    #[test]
    fn tiles_cut_the_padded_canvas() {
        let (h, w) = (3, 4);
        let img: Vec<u8> = (0..h * w)
            .flat_map(|i| [i as u8 + 1, 50 + i as u8, 100])
            .collect();
        // The canvas value at (y, x) of channel 0: image pixel (y - 1, x - 1) + 1, else 0.
        let canvas = |y: usize, x: usize| -> f32 {
            if (1..=h).contains(&y) && (1..=w).contains(&x) {
                ((y - 1) * w + (x - 1) + 1) as f32
            } else {
                0.0
            }
        };
        for (simd, stream) in Convert::available()
            .into_iter()
            .flat_map(|c| [(c, false), (c, true)])
        {
            let mut out = vec![-1f32; 6 * 3 * 4];
            let mut rows = ImageRows {
                image: &img,
                row_len: w * 3,
            };
            write_tiles(
                simd,
                stream,
                &mut rows,
                (h, w),
                (1, 1),
                2,
                (2, 3),
                &identity(),
                &mut out,
            );
            for (t, tile) in out.chunks_exact(12).enumerate() {
                let (ty, tx) = (t / 3, t % 3);
                for py in 0..2 {
                    for px in 0..2 {
                        let (y, x) = (2 * ty + py, 2 * tx + px);
                        assert_eq!(
                            tile[py * 2 + px],
                            canvas(y, x),
                            "{simd:?} tile {t} at ({py}, {px})"
                        );
                        let blue = if canvas(y, x) > 0.0 { 100.0 } else { 0.0 };
                        assert_eq!(tile[8 + py * 2 + px], blue, "{simd:?} tile {t} blue");
                    }
                }
            }
        }
    }

    #[test]
    fn chw_crop_and_pad() {
        // 2x3 image, pixel (y, x) = [10y + x, 100 + 10y + x, 200 + x].
        let (h, w) = (2, 3);
        let img: Vec<u8> = (0..h)
            .flat_map(|y| {
                (0..w).flat_map(move |x| {
                    [
                        (10 * y + x) as u8,
                        (100 + 10 * y + x) as u8,
                        (200 + x) as u8,
                    ]
                })
            })
            .collect();
        let mut out = vec![0f32; 3 * 2 * 2];
        write_chw(
            &mut ImageRows {
                image: &img,
                row_len: w * 3,
            },
            (h, w),
            Window {
                top: 0,
                left: 1,
                height: 2,
                width: 2,
            },
            &identity(),
            &mut out,
        );
        assert_eq!(&out[..4], &[1., 2., 11., 12.]);
        assert_eq!(&out[4..8], &[101., 102., 111., 112.]);
        let mut out = vec![0f32; 3 * 4 * 3];
        write_chw(
            &mut ImageRows {
                image: &img,
                row_len: w * 3,
            },
            (h, w),
            Window {
                top: -1,
                left: -1,
                height: 4,
                width: 3,
            },
            &identity(),
            &mut out,
        );
        assert_eq!(
            &out[..12],
            &[0., 0., 0., 0., 0., 1., 0., 10., 11., 0., 0., 0.]
        );
    }

    /// Every conversion this CPU runs writes the portable path's values, in
    /// both layouts, float32 and bfloat16, at widths that are not multiples
    /// of the vector width.
    #[test]
    fn conversions_agree() {
        let table = ValueTable::new(
            Some(1.0 / 255.0),
            Some(([0.48, 0.45, 0.4], [0.27, 0.26, 0.28])),
        );
        let (h, w) = (28, 37 * 28);
        let img: Vec<u8> = (0..h * w * 3).map(|i| (i * 7919 % 256) as u8).collect();
        let source = || ImageRows {
            image: &img,
            row_len: w * 3,
        };
        let window = Window {
            top: -3,
            left: 2,
            height: 31,
            width: w - 5,
        };
        let g = PatchGeometry {
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
        };
        let chw = |simd| {
            let mut out = vec![0f32; 3 * 31 * (w - 5)];
            write_chw_with(simd, &mut source(), (h, w), window, &table, &mut out);
            out
        };
        let chw_bf16 = |simd| {
            let mut out = vec![Bf16(0); 3 * 31 * (w - 5)];
            write_chw_with(simd, &mut source(), (h, w), window, &table, &mut out);
            out
        };
        let qwen = |simd| {
            let mut out = vec![0f32; (h / 14) * (w / 14) * g.row_len()];
            write_qwen_patches_with(simd, &mut source(), (h, w), g, &table, &mut out);
            out
        };
        let qwen_bf16 = |simd| {
            let mut out = vec![Bf16(0); (h / 14) * (w / 14) * g.row_len()];
            write_qwen_patches_with(simd, &mut source(), (h, w), g, &table, &mut out);
            out
        };
        // The channel-first streaming writer, rows on and off vector boundaries
        // (640-value rows from a cache-line aligned start stream whole).
        let wide = Window {
            top: 0,
            left: 0,
            height: 20,
            width: 640,
        };
        for (win, shift) in [(window, 0), (window, 3), (wide, 0), (wide, 4), (wide, 16)] {
            let mut f32s = vec![0f32; 3 * win.height * win.width];
            let mut bf16s = vec![Bf16(0); f32s.len()];
            let portable = Convert::Portable;
            write_chw_with(portable, &mut source(), (h, w), win, &table, &mut f32s);
            write_chw_with(portable, &mut source(), (h, w), win, &table, &mut bf16s);
            check_at(&f32s, shift, |o| {
                write_chw_streaming(&mut source(), (h, w), win, &table, o)
            });
            check_at(&bf16s, shift, |o| {
                write_chw_streaming(&mut source(), (h, w), win, &table, o)
            });
        }
        // The streaming writer (planar patches, whole-line streaming stores) at every
        // offset from a cache line, float32 and bfloat16.
        let (f32s, bf16s) = (qwen(Convert::Portable), qwen_bf16(Convert::Portable));
        for shift in [0, 1, 4, 8, 15] {
            check_at(&f32s, shift, |o| {
                write_qwen_patches_streaming(&mut source(), (h, w), g, &table, o)
            });
            check_at(&bf16s, shift, |o| {
                write_qwen_patches_streaming(&mut source(), (h, w), g, &table, o)
            });
        }
        for simd in Convert::available() {
            assert_eq!(chw(simd), chw(Convert::Portable), "{simd:?}");
            assert_eq!(chw_bf16(simd), chw_bf16(Convert::Portable), "{simd:?}");
            assert_eq!(qwen(simd), qwen(Convert::Portable), "{simd:?}");
            assert_eq!(qwen_bf16(simd), qwen_bf16(Convert::Portable), "{simd:?}");
        }
        // The portable values are the table's.
        let out = chw(Convert::Portable);
        assert_eq!(
            out[31 * (w - 5) + 3 * (w - 5)],
            table.get(1, img[2 * 3 + 1])
        );
    }

    /// The streaming Qwen2-VL writer equals the portable one for patch sides
    /// and temporal sizes around its limits (row spills, masked rows, the
    /// fallback above 16 pixels), at several offsets from a cache line.
    #[test]
    fn qwen_streaming_geometries() {
        let table = ValueTable::new(Some(1.0 / 255.0), Some(([0.4, 0.5, 0.6], [0.2, 0.3, 0.25])));
        for (p, t) in [
            (1, 2),
            (2, 2),
            (3, 1),
            (4, 2),
            (5, 3),
            (7, 2),
            (8, 2),
            (14, 1),
            (14, 3),
            (16, 2),
            (17, 2),
        ] {
            let g = PatchGeometry {
                patch_size: p,
                merge_size: 2,
                temporal_patch_size: t,
            };
            let (h, w) = (4 * p, 6 * p);
            let img: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 251) as u8).collect();
            let source = || ImageRows {
                image: &img,
                row_len: w * 3,
            };
            let mut expect = vec![0f32; (h / p) * (w / p) * g.row_len()];
            write_qwen_patches_with(
                Convert::Portable,
                &mut source(),
                (h, w),
                g,
                &table,
                &mut expect,
            );
            let mut expect16 = vec![Bf16(0); expect.len()];
            write_qwen_patches_with(
                Convert::Portable,
                &mut source(),
                (h, w),
                g,
                &table,
                &mut expect16,
            );
            for shift in [0, 3, 8, 13] {
                check_at(&expect, shift, |o| {
                    write_qwen_patches_streaming(&mut source(), (h, w), g, &table, o)
                });
                check_at(&expect16, shift, |o| {
                    write_qwen_patches_streaming(&mut source(), (h, w), g, &table, o)
                });
            }
        }
    }

    /// The AVX-512 BF16 conversion (where this CPU has it) gives the bits of
    /// the emulated rounding for every byte value of every channel, in the
    /// channel-first writers (plain and streaming) and the Qwen2-VL ones; a map
    /// with subnormal values does not use it.
    #[test]
    fn bf16_instruction_equals_emulation() {
        // 308 columns (11 blocks of 28): every byte value in every channel.
        let (h, w) = (28, 308);
        let img: Vec<u8> = (0..h * w)
            .flat_map(|i| {
                let v = (i % w % 256) as u8;
                [v, 255 - v, v.wrapping_mul(7).wrapping_add((i / w) as u8)]
            })
            .collect();
        let source = || ImageRows {
            image: &img,
            row_len: w * 3,
        };
        // Larger than the image: padded rows and columns too.
        let window = Window {
            top: -1,
            left: -3,
            height: h + 2,
            width: w + 5,
        };
        let g = PatchGeometry {
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
        };
        let tables = [
            || {
                let clip = ([0.481, 0.458, 0.408], [0.269, 0.261, 0.276]);
                ValueTable::new(Some(1.0 / 255.0), Some(clip))
            },
            || ValueTable::new(Some(1.0 / 255.0), Some(([0.5; 3], [0.5; 3]))),
            || ValueTable::new(None, None),
            || {
                ValueTable::new(
                    Some(1.0 / 255.0),
                    Some(([1e3, -2.5, 0.0], [1e-3, 7.0, 1e4])),
                )
            },
        ];
        for table in tables {
            let (native, emulated) = (table(), table().without_bf16_instruction());
            let mut chw = vec![Bf16(0); 3 * window.height * window.width];
            write_chw(&mut source(), (h, w), window, &emulated, &mut chw);
            let mut qwen = vec![Bf16(0); (h / 14) * (w / 14) * g.row_len()];
            write_qwen_patches(&mut source(), (h, w), g, &emulated, &mut qwen);
            for shift in [0, 5, 16, 31] {
                check_at(&chw, shift, |o| {
                    write_chw(&mut source(), (h, w), window, &native, o)
                });
                check_at(&chw, shift, |o| {
                    write_chw_streaming(&mut source(), (h, w), window, &native, o)
                });
                check_at(&qwen, shift, |o| {
                    write_qwen_patches_streaming(&mut source(), (h, w), g, &native, o)
                });
            }
        }
        let tiny = ValueTable::new(Some(1e-40), None);
        assert!(!tiny.bf16_instruction_exact() && !tiny.bf16_instruction);
        assert!(ValueTable::new(Some(1.0 / 255.0), None).bf16_instruction_exact());
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(Bf16::from_f32(1.0).0, 0x3F80);
        assert_eq!(Bf16::from_f32(-2.0).0, 0xC000);
        // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(Bf16::from_f32(1.0 + 1.0 / 256.0).0, 0x3F80);
        // 1 + 3 * 2^-8 is halfway too: rounds up to the even 1 + 2^-6.
        assert_eq!(Bf16::from_f32(1.0 + 3.0 / 256.0).0, 0x3F82);
        // Just above halfway rounds up.
        assert_eq!(Bf16::from_f32(f32::from_bits(0x3F80_8001)).0, 0x3F81);
    }

    #[test]
    fn table_normalizes() {
        let t = ValueTable::new(Some(1.0 / 255.0), Some(([0.5; 3], [0.5; 3])));
        assert_eq!(t.get(0, 0), -1.0);
        assert!((t.get(2, 255) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn qwen_patch_order() {
        // 4x4 image, patch 1, merge 2, temporal 2: grid 4x4, rows in 2x2 blocks.
        let (h, w) = (4, 4);
        let img: Vec<u8> = (0..h * w).flat_map(|i| [i as u8, 0, 0]).collect();
        let g = PatchGeometry {
            patch_size: 1,
            merge_size: 2,
            temporal_patch_size: 2,
        };
        let mut out = vec![0f32; 16 * g.row_len()];
        write_qwen_patches(
            &mut ImageRows {
                image: &img,
                row_len: w * 3,
            },
            (h, w),
            g,
            &identity(),
            &mut out,
        );
        let red: Vec<f32> = out.chunks_exact(6).map(|r| r[0]).collect();
        assert_eq!(
            red,
            vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]
        );
        // The temporal copy repeats the frame.
        assert!(out.chunks_exact(6).all(|r| r[0] == r[1]));
    }
}
