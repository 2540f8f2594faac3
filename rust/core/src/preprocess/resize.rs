//! Output-size rules and convolution resampling of RGB8 images.
//!
//! The pipeline resamples both backends with [`super::pillow`]: Pillow's
//! 22-bit weights, or torch's 16-bit ones ([`super::pillow::Weights::torchvision`]).
//! The tests keep an independent implementation of the torchvision backend
//! on `fast_image_resize` (a dev-dependency), which equals torch's uint8
//! antialiased kernel, and check that both give the same bytes.
//!
//! That resampling is `fast_image_resize`'s convolution, whose filters
//! (bilinear, Catmull-Rom bicubic with a = -0.5, Lanczos3, box, Hamming) and
//! coefficient layout are those of Pillow (its kernels are a port of
//! Pillow-SIMD). One difference matters for exactness: for 8-bit images the
//! crate runs the vertical pass first, while Pillow and torch's uint8 kernel
//! run the horizontal pass first and round (and clip) to 8 bits in between.
//! With bicubic overshoot on sharp edges that order changes results by more
//! than one level, so `reference::resize_rgb8` drives the crate one axis at a time,
//! horizontal then vertical, which reproduces the reference order.

use super::PreprocessError;

/// Resampling filter, named as in `PIL.Image.Resampling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter, antialiased when downscaling (PIL `BILINEAR`).
    Bilinear,
    /// Cubic convolution with a = -0.5, antialiased when downscaling (PIL `BICUBIC`).
    Bicubic,
    /// Lanczos with 3 lobes (PIL `LANCZOS`).
    Lanczos,
    /// Box filter (PIL `BOX`).
    Box,
    /// Hamming-windowed filter (PIL `HAMMING`).
    Hamming,
}

impl Filter {
    /// The filter for a `PIL.Image.Resampling` integer code, if supported.
    pub fn from_pil_code(code: i64) -> Option<Filter> {
        match code {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            4 => Some(Filter::Box),
            5 => Some(Filter::Hamming),
            _ => None,
        }
    }
}

/// Size after resizing the shorter edge to `size` and scaling the longer one
/// with truncation, as `transformers.image_transforms.get_resize_output_image_size`
/// (with `default_to_square=False`) and torchvision's `resize` do.
pub fn shortest_edge_size(height: usize, width: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python's `int(size * long / short)`: a correctly rounded division of
    // exact integers, then truncation; f64 does the same below 2^53.
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

/// Qwen2-VL's `smart_resize`: both sides multiples of `factor`, the area
/// within `[min_pixels, max_pixels]`, the aspect ratio kept as far as possible.
///
/// Mirrors the reference's float arithmetic step by step (including Python's
/// round-half-to-even) so that the grid sizes agree exactly.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), PreprocessError> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        return Err(PreprocessError::AspectRatio { height, width });
    }
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// LLaVA-NeXT's `select_best_resolution`: of the candidate `(height, width)`
/// canvases, the one that keeps the most of the image's pixels when it is
/// scaled to fit, ties going to the least wasted area, then to the earlier
/// candidate; `None` when there is no candidate. The reference's float
/// steps (f64 division, truncation) are mirrored so that choices agree exactly.
pub fn select_best_resolution(
    (height, width): (usize, usize),
    candidates: &[(usize, usize)],
) -> Option<(usize, usize)> {
    let (oh, ow) = (height as f64, width as f64);
    let mut best = None;
    let (mut most_kept, mut least_wasted) = (0usize, usize::MAX);
    for &(ch, cw) in candidates {
        let scale = (cw as f64 / ow).min(ch as f64 / oh);
        let (dw, dh) = ((ow * scale) as usize, (oh * scale) as usize);
        let kept = (dw * dh).min(width * height);
        let wasted = (ch * cw).saturating_sub(kept);
        if kept > most_kept || (kept == most_kept && wasted < least_wasted) {
            (most_kept, least_wasted, best) = (kept, wasted, Some((ch, cw)));
        }
    }
    best
}

/// LLaVA-NeXT's `get_patch_output_size`: the size of the image scaled to fit
/// the `target` canvas with its aspect ratio kept (the long side fills the
/// canvas, the other is rounded up).
pub fn fit_size((height, width): (usize, usize), (th, tw): (usize, usize)) -> (usize, usize) {
    let (scale_w, scale_h) = (tw as f64 / width as f64, th as f64 / height as f64);
    if scale_w < scale_h {
        (((height as f64 * scale_w).ceil() as usize).min(th), tw)
    } else {
        (th, ((width as f64 * scale_h).ceil() as usize).min(tw))
    }
}

/// The torchvision backend on `fast_image_resize` (and the Pillow backend on
/// [`super::pillow::resize`]), whole images at a time: the tests' reference.
#[cfg(test)]
pub(crate) mod reference {
    use fast_image_resize::images::{Image, ImageRef};
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

    use super::super::pillow::{self, PillowScratch};
    use super::super::{Backend, PreprocessError};
    use super::Filter;

    fn fir(filter: Filter) -> FilterType {
        match filter {
            Filter::Bilinear => FilterType::Bilinear,
            Filter::Bicubic => FilterType::CatmullRom,
            Filter::Lanczos => FilterType::Lanczos3,
            Filter::Box => FilterType::Box,
            Filter::Hamming => FilterType::Hamming,
        }
    }

    /// Reusable resampling state.
    #[derive(Default)]
    pub struct Scratch {
        resizer: Resizer,
        pillow: PillowScratch,
        /// Result of the horizontal pass.
        horizontal: Vec<u8>,
        /// Final resized image.
        pub resized: Vec<u8>,
    }

    impl Scratch {
        /// New empty scratch space.
        pub fn new() -> Self {
            Self::default()
        }
    }

    fn resize_err(e: impl std::fmt::Display) -> PreprocessError {
        PreprocessError::Resize(e.to_string())
    }

    fn one_pass(
        resizer: &mut Resizer,
        src: &[u8],
        (sh, sw): (usize, usize),
        dst: &mut Vec<u8>,
        (dh, dw): (usize, usize),
        filter: Filter,
    ) -> Result<(), PreprocessError> {
        // Every byte is overwritten: grow without clearing.
        dst.resize(dh * dw * 3, 0);
        dst.truncate(dh * dw * 3);
        let src_img =
            ImageRef::new(sw as u32, sh as u32, src, PixelType::U8x3).map_err(resize_err)?;
        let mut dst_img =
            Image::from_slice_u8(dw as u32, dh as u32, dst.as_mut_slice(), PixelType::U8x3)
                .map_err(resize_err)?;
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fir(filter)));
        resizer
            .resize(&src_img, &mut dst_img, &options)
            .map_err(resize_err)
    }

    /// Resizes one HWC RGB8 image to `dst` size into `scratch.resized` as the
    /// given backend does, or returns `None` when the size is unchanged (the
    /// caller then reads `src` directly).
    pub fn resize_rgb8(
        scratch: &mut Scratch,
        src: &[u8],
        src_size: (usize, usize),
        dst_size: (usize, usize),
        filter: Filter,
        backend: Backend,
    ) -> Result<Option<()>, PreprocessError> {
        let (sh, sw) = src_size;
        let (dh, dw) = dst_size;
        if src_size == dst_size {
            return Ok(None);
        }
        let Scratch {
            resizer,
            pillow: pil,
            horizontal,
            resized,
        } = scratch;
        if backend != Backend::Torchvision {
            pillow::resize(pil, src, src_size, dst_size, filter, resized);
            return Ok(Some(()));
        }
        match (sw != dw, sh != dh) {
            (true, true) => {
                one_pass(resizer, src, (sh, sw), horizontal, (sh, dw), filter)?;
                one_pass(resizer, horizontal, (sh, dw), resized, (dh, dw), filter)?;
            }
            (true, false) | (false, true) => {
                one_pass(resizer, src, src_size, resized, dst_size, filter)?
            }
            (false, false) => unreachable!("equal sizes returned above"),
        }
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::reference::{resize_rgb8, Scratch};
    use super::*;
    use crate::preprocess::Backend;

    /// LLaVA-NeXT's canvas choice, worked by hand from the reference's rules.
    #[test]
    fn anyres_canvas_choice() {
        let pins = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];
        // Square 300: every canvas keeps all 90000 pixels; 336x672 and 672x336
        // waste the least, the earlier wins.
        assert_eq!(select_best_resolution((300, 300), &pins), Some((336, 672)));
        // 336 / 300 * 300 is 336.00000000000006 in f64: the reference rounds it up to 337.
        assert_eq!(fit_size((300, 300), (336, 672)), (336, 337));
        // 800x400 (h x w): 672x336 keeps 672x336 = 225792 pixels; 672x672 and
        // 1008x336 keep as many but waste more.
        assert_eq!(select_best_resolution((800, 400), &pins), Some((672, 336)));
        assert_eq!(fit_size((800, 400), (672, 336)), (672, 336));
        // A large image keeps the most on the largest canvas.
        assert_eq!(
            select_best_resolution((1000, 1000), &pins),
            Some((672, 672))
        );
        // Aspect kept, the short side rounded up: 100 * (672 / 300) = 224.00000000000003.
        assert_eq!(fit_size((100, 300), (336, 672)), (225, 672));
        assert_eq!(select_best_resolution((5, 5), &[]), None);
    }

    #[test]
    fn shortest_edge_matches_reference_rounding() {
        assert_eq!(shortest_edge_size(300, 300, 336), (336, 336));
        assert_eq!(shortest_edge_size(7, 300, 336), (336, 14400));
        assert_eq!(shortest_edge_size(301, 299, 336), (338, 336));
        assert_eq!(shortest_edge_size(299, 301, 224), (224, 225));
    }

    #[test]
    fn smart_resize_known_values() {
        let (lo, hi) = (56 * 56, 28 * 28 * 1280);
        assert_eq!(smart_resize(300, 300, 28, lo, hi).unwrap(), (308, 308));
        assert_eq!(smart_resize(1, 1, 28, lo, hi).unwrap(), (56, 56));
        assert_eq!(smart_resize(7, 300, 28, lo, hi).unwrap(), (28, 392));
        // 14 / 28 = 0.5 rounds to even (0), as Python's round does.
        assert_eq!(smart_resize(14, 70, 28, lo, hi).unwrap().0 % 28, 0);
        // Large images shrink under max_pixels.
        let (h, w) = smart_resize(3000, 4000, 28, lo, hi).unwrap();
        assert!(h * w <= hi && h % 28 == 0 && w % 28 == 0);
        assert!(matches!(
            smart_resize(1, 300, 28, lo, hi),
            Err(PreprocessError::AspectRatio { .. })
        ));
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 5 * 9 * 3];
        let mut s = Scratch::new();
        for filter in [
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Lanczos,
            Filter::Box,
            Filter::Hamming,
        ] {
            for backend in [Backend::Pillow, Backend::Torchvision] {
                resize_rgb8(&mut s, &src, (5, 9), (13, 4), filter, backend)
                    .unwrap()
                    .unwrap();
                assert_eq!(s.resized.len(), 13 * 4 * 3);
                assert!(s.resized.iter().all(|&v| v == 77), "{filter:?} {backend:?}");
            }
        }
        assert!(resize_rgb8(
            &mut s,
            &src,
            (5, 9),
            (5, 9),
            Filter::Bicubic,
            Backend::Pillow
        )
        .unwrap()
        .is_none());
    }
}
