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
}

impl ValueTable {
    /// Builds the map; `rescale` / `mean_std` are `None` when the processor
    /// skips that step.
    pub fn new(rescale: Option<f64>, mean_std: Option<([f64; 3], [f64; 3])>) -> Self {
        let r = rescale.unwrap_or(1.0);
        let (mean, std) = mean_std.unwrap_or(([0.0; 3], [1.0; 3]));
        Self {
            scale: std::array::from_fn(|c| (r / std[c]) as f32),
            bias: std::array::from_fn(|c| (-mean[c] / std[c]) as f32),
        }
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
    /// The value nearest to `v` (round to nearest even).
    fn from_f32(v: f32) -> Self;
}

impl OutValue for f32 {
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

/// Writes `[3, window.height, window.width]` channel-first values of the HWC
/// image `img` (size `h` x `w`) into `out`.
pub fn write_chw<T: OutValue>(
    img: &[u8],
    hw: (usize, usize),
    window: Window,
    table: &ValueTable,
    out: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { write_chw_avx2(img, hw, window, table, out) };
        return;
    }
    write_chw_body(img, hw, window, table, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn write_chw_avx2<T: OutValue>(
    img: &[u8],
    hw: (usize, usize),
    window: Window,
    table: &ValueTable,
    out: &mut [T],
) {
    write_chw_body(img, hw, window, table, out)
}

#[inline(always)]
fn write_chw_body<T: OutValue>(
    img: &[u8],
    (h, w): (usize, usize),
    window: Window,
    table: &ValueTable,
    out: &mut [T],
) {
    let plane = window.height * window.width;
    debug_assert_eq!(out.len(), 3 * plane);
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    let inside_cols = window.left >= 0 && window.left as usize + window.width <= w;
    for y in 0..window.height {
        let row_out = y * window.width..(y + 1) * window.width;
        let (r, g, b) = (
            &mut r_plane[row_out.clone()],
            &mut g_plane[row_out.clone()],
            &mut b_plane[row_out],
        );
        let sy = y as isize + window.top;
        if sy < 0 || sy as usize >= h {
            r.fill(table.out(0, 0));
            g.fill(table.out(1, 0));
            b.fill(table.out(2, 0));
            continue;
        }
        let src_row = &img[sy as usize * w * 3..(sy as usize + 1) * w * 3];
        if inside_cols {
            // Hot path: no padding on this row.
            let src = &src_row[window.left as usize * 3..(window.left as usize + window.width) * 3];
            for (((px, r), g), b) in src
                .chunks_exact(3)
                .zip(r.iter_mut())
                .zip(g.iter_mut())
                .zip(b.iter_mut())
            {
                *r = table.out(0, px[0]);
                *g = table.out(1, px[1]);
                *b = table.out(2, px[2]);
            }
        } else {
            for x in 0..window.width {
                let sx = x as isize + window.left;
                let px = if sx < 0 || sx as usize >= w {
                    [0u8; 3]
                } else {
                    let i = sx as usize * 3;
                    [src_row[i], src_row[i + 1], src_row[i + 2]]
                };
                r[x] = table.out(0, px[0]);
                g[x] = table.out(1, px[1]);
                b[x] = table.out(2, px[2]);
            }
        }
    }
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

/// Writes the HWC image `img` (size `h` x `w`, both multiples of
/// patch x merge) as Qwen2-VL patch rows into `out`, `[grid_h * grid_w, row_len]`.
///
/// Row order is (block row, block column, row in block, column in block) over
/// merge x merge blocks of patches; inside a row the order is (channel,
/// temporal copy, y, x). A single image fills every temporal slot with the
/// same frame, as the reference repeats it.
pub fn write_qwen_patches<T: OutValue>(
    img: &[u8],
    hw: (usize, usize),
    g: PatchGeometry,
    table: &ValueTable,
    out: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { write_qwen_patches_avx2(img, hw, g, table, out) };
        return;
    }
    write_qwen_patches_body(img, hw, g, table, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn write_qwen_patches_avx2<T: OutValue>(
    img: &[u8],
    hw: (usize, usize),
    g: PatchGeometry,
    table: &ValueTable,
    out: &mut [T],
) {
    write_qwen_patches_body(img, hw, g, table, out)
}

#[inline(always)]
fn write_qwen_patches_body<T: OutValue>(
    img: &[u8],
    (h, w): (usize, usize),
    g: PatchGeometry,
    table: &ValueTable,
    out: &mut [T],
) {
    let (p, m, t) = (g.patch_size, g.merge_size, g.temporal_patch_size);
    let (grid_h, grid_w) = (h / p, w / p);
    let row_len = g.row_len();
    debug_assert_eq!(out.len(), grid_h * grid_w * row_len);
    let mut rows = out.chunks_exact_mut(row_len);
    for bh in 0..grid_h / m {
        for bw in 0..grid_w / m {
            for mh in 0..m {
                for mw in 0..m {
                    let row = rows.next().expect("row count follows from the grid");
                    let (gy, gx) = (bh * m + mh, bw * m + mw);
                    for c in 0..3 {
                        let block = &mut row[c * t * p * p..(c + 1) * t * p * p];
                        let (first, copies) = block.split_at_mut(p * p);
                        for py in 0..p {
                            let src = &img[((gy * p + py) * w + gx * p) * 3
                                ..((gy * p + py) * w + gx * p + p) * 3];
                            for (px, pixel) in src.chunks_exact(3).enumerate() {
                                first[py * p + px] = table.out(c, pixel[c]);
                            }
                        }
                        for copy in copies.chunks_exact_mut(p * p) {
                            copy.copy_from_slice(first);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ValueTable {
        ValueTable::new(None, None)
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
            &img,
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
            &img,
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
        write_qwen_patches(&img, (h, w), g, &identity(), &mut out);
        let red: Vec<f32> = out.chunks_exact(6).map(|r| r[0]).collect();
        assert_eq!(
            red,
            vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]
        );
        // The temporal copy repeats the frame.
        assert!(out.chunks_exact(6).all(|r| r[0] == r[1]));
    }
}
