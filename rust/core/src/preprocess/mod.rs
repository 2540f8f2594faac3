//! Image preprocessing: a batch of uint8 observations `[N, H, W, 3]` to the
//! model's `pixel_values`, equal to what the Hugging Face image processors
//! compute, in parallel over images.
//!
//! Each image goes resize (8-bit convolution, see [`pillow`]: the horizontal
//! pass over the whole image, the vertical pass band by band as the layout
//! writer consumes rows) -> optional center crop -> rescale + normalize (one
//! affine map per channel) -> the model's layout: channel-first `[3, H, W]`
//! (CLIP, SigLIP) or Qwen2-VL's flattened patch rows.

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod layout;
pub mod pillow;
pub mod resize;

use rayon::prelude::*;
use thiserror::Error;

/// Outputs from this size on are written with streaming stores (whole cache
/// lines, not read before they are written): larger than the caches keep.
/// In-process A/B on 64 images (blocks of five runs): channel-first CLIP-336
/// 8-22 %, SigLIP-224 7-14 %, SigLIP-384 12-27 % faster; Qwen2-VL 7-12 %
/// (measured with an earlier form of its streaming writer, which staged each
/// patch row as floats in L1 and copied it out; the current one is
/// `layout::PatchRowBytes`). Below it plain stores, which leave the values in
/// cache for the reader.
pub const STREAM_BYTES: usize = 32 << 20;

pub use layout::{
    Bf16, Convert, ImageRows, OutValue, PatchGeometry, RowSource, ValueTable, Window,
};
pub use resize::{fit_size, select_best_resolution, shortest_edge_size, smart_resize, Filter};

/// What went wrong while preprocessing.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PreprocessError {
    /// The batch holds no image.
    #[error("empty batch: observations must hold at least one image, got shape {0:?}")]
    EmptyBatch(Vec<usize>),
    /// The input is not `[N, H, W, 3]` or does not match its byte length.
    #[error("bad observation shape: {0}")]
    BadShape(String),
    /// Qwen2-VL rejects aspect ratios above 200.
    #[error(
        "absolute aspect ratio must be smaller than 200, got height {height} and width {width}"
    )]
    AspectRatio { height: usize, width: usize },
    /// The pipeline's settings are inconsistent.
    #[error("invalid preprocessing settings: {0}")]
    InvalidSpec(String),
    /// The output buffer has the wrong length.
    #[error("output buffer holds {got} values, expected {expected}")]
    OutputSize { expected: usize, got: usize },
    /// The resampler refused its input (should not happen with checked sizes).
    #[error("resize failed: {0}")]
    Resize(String),
}

/// How the resized size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRule {
    /// Shorter edge to this length, longer edge scaled and truncated (CLIP).
    ShortestEdge(usize),
    /// Fixed output size (SigLIP).
    Exact { height: usize, width: usize },
    /// Qwen2-VL's `smart_resize` with factor patch x merge.
    SmartResize {
        min_pixels: usize,
        max_pixels: usize,
    },
}

/// Which Hugging Face backend the pipeline reproduces. They differ in the
/// resampler's fixed-point precision and in where a crop larger than the
/// image puts the zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `*ImageProcessorPil` on Pillow <= 12: Pillow resampling, horizontal pass
    /// first; crop top = floor((image - crop) / 2).
    Pillow,
    /// The same on Pillow >= 13, which runs the vertical pass first when the
    /// height shrinks by more than twice as many pixels as the width does
    /// (`Resample.c`: `in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w)`).
    Pillow13,
    /// torchvision `*ImageProcessor`: torch's uint8 kernel; pad floor((crop - image) / 2) before.
    Torchvision,
}

/// Output layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `[N, 3, H, W]`, optionally center cropped to `(height, width)`.
    ChannelsFirst { crop: Option<(usize, usize)> },
    /// Qwen2-VL patch rows `[N * grid_h * grid_w, 3 * T * P * P]`.
    Qwen2VlPatches(PatchGeometry),
    /// LLaVA-NeXT's "anyres" tiling, `[N, 1 + tiles, 3, tile, tile]`: the image
    /// resized to `tile` x `tile` (the resize rule, `Exact`), then the image
    /// scaled to fit the best of the `pinpoints` canvases (`(height, width)`,
    /// multiples of `tile`), centered on it with zero padding and cut into tiles
    /// in row-major order.
    AnyRes {
        tile: usize,
        pinpoints: Vec<(usize, usize)>,
    },
}

/// Everything a pipeline does, read from a Hugging Face processor's config.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// The backend whose arithmetic is reproduced.
    pub backend: Backend,
    /// Resize rule and filter; `None` when the processor does not resize.
    pub resize: Option<(SizeRule, Filter)>,
    /// Multiply by this (usually 1/255); `None` to skip.
    pub rescale: Option<f64>,
    /// Per-channel mean and std; `None` to skip.
    pub normalize: Option<([f64; 3], [f64; 3])>,
    pub layout: Layout,
}

/// Shapes of one batch's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPlan {
    /// Size of each image after resizing, `(height, width)`.
    pub resized: (usize, usize),
    /// Shape of `pixel_values`.
    pub shape: Vec<usize>,
    /// `(grid_h, grid_w)` of each image for the Qwen2-VL layout.
    pub grid: Option<(usize, usize)>,
    /// The tiling of each image for the LLaVA-NeXT layout.
    pub tiles: Option<TilePlan>,
}

/// How the LLaVA-NeXT layout tiles an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    /// The chosen canvas `(height, width)`.
    pub canvas: (usize, usize),
    /// The image's size scaled to fit the canvas.
    pub fitted: (usize, usize),
    /// Where the fitted image sits on the canvas: `(top, left)`.
    pub offset: (usize, usize),
    /// Tiles per column and per row of the canvas.
    pub grid: (usize, usize),
}

impl OutputPlan {
    /// Number of f32 values of `pixel_values`.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the output holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A checked preprocessing pipeline with its value table built once.
pub struct Pipeline {
    spec: PipelineSpec,
    table: ValueTable,
    /// Worker state kept between batches: buffers stay mapped, weights and
    /// horizontal plans stay computed (a batch has one size).
    scratch: std::sync::Mutex<Vec<pillow::PillowScratch>>,
}

/// A worker's scratch space, given back to its pipeline when dropped.
struct Lease<'a> {
    home: &'a std::sync::Mutex<Vec<pillow::PillowScratch>>,
    scratch: Option<pillow::PillowScratch>,
}

impl<'a> Lease<'a> {
    /// A free scratch of `home`, or a new one.
    fn take(home: &'a std::sync::Mutex<Vec<pillow::PillowScratch>>) -> Self {
        let free = home.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Lease {
            home,
            scratch: Some(free.unwrap_or_default()),
        }
    }

    fn get(&mut self) -> &mut pillow::PillowScratch {
        self.scratch.as_mut().expect("held until drop")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.scratch.take() {
            self.home.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        }
    }
}

impl Pipeline {
    /// Checks `spec` and prepares the value table.
    pub fn new(spec: PipelineSpec) -> Result<Self, PreprocessError> {
        let bad = |m: &str| Err(PreprocessError::InvalidSpec(m.to_string()));
        if let Some((_, std)) = spec.normalize {
            if std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
                return bad("image_std must be finite and non-zero");
            }
        }
        match (spec.resize, &spec.layout) {
            (
                Some((
                    SizeRule::SmartResize {
                        min_pixels,
                        max_pixels,
                    },
                    _,
                )),
                Layout::Qwen2VlPatches(_),
            ) if min_pixels > max_pixels => return bad("min_pixels must not exceed max_pixels"),
            (Some((SizeRule::SmartResize { .. }, _)), Layout::Qwen2VlPatches(_)) => {}
            (Some((SizeRule::SmartResize { .. }, _)), _) => {
                return bad("smart resize needs the Qwen2-VL layout")
            }
            (Some((SizeRule::ShortestEdge(0), _)), _)
            | (Some((SizeRule::Exact { height: 0, .. }, _)), _) => {
                return bad("resize size must be positive")
            }
            (Some((SizeRule::Exact { width: 0, .. }, _)), _) => {
                return bad("resize size must be positive")
            }
            _ => {}
        }
        match &spec.layout {
            Layout::Qwen2VlPatches(g)
                if g.patch_size == 0 || g.merge_size == 0 || g.temporal_patch_size == 0 =>
            {
                return bad("patch_size, merge_size and temporal_patch_size must be positive")
            }
            Layout::ChannelsFirst {
                crop: Some((0, _)) | Some((_, 0)),
            } => return bad("crop size must be positive"),
            Layout::AnyRes { tile, pinpoints } => {
                if *tile == 0 {
                    return bad("the tile size must be positive");
                }
                if pinpoints.is_empty() {
                    return bad("image_grid_pinpoints must hold at least one (height, width)");
                }
                if let Some(p) = pinpoints
                    .iter()
                    .find(|(h, w)| *h == 0 || *w == 0 || h % tile != 0 || w % tile != 0)
                {
                    return Err(PreprocessError::InvalidSpec(format!(
                        "image_grid_pinpoints must be positive multiples of the tile size {tile}, got {p:?}"
                    )));
                }
                match spec.resize {
                    Some((SizeRule::Exact { height, width }, _))
                        if (height, width) == (*tile, *tile) => {}
                    _ => return bad("the anyres layout resizes to exactly tile x tile"),
                }
            }
            _ => {}
        }
        let table = ValueTable::new(spec.rescale, spec.normalize);
        Ok(Self {
            spec,
            table,
            scratch: Default::default(),
        })
    }

    /// The settings this pipeline runs.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// Output shapes for `n` images of `height` x `width`.
    pub fn plan(
        &self,
        n: usize,
        height: usize,
        width: usize,
    ) -> Result<OutputPlan, PreprocessError> {
        if n == 0 {
            return Err(PreprocessError::EmptyBatch(vec![n, height, width, 3]));
        }
        if height == 0 || width == 0 {
            return Err(PreprocessError::BadShape(format!(
                "images must be at least 1x1, got height {height} and width {width}"
            )));
        }
        let resized = match self.spec.resize {
            None => (height, width),
            Some((SizeRule::ShortestEdge(s), _)) => shortest_edge_size(height, width, s),
            Some((SizeRule::Exact { height, width }, _)) => (height, width),
            Some((
                SizeRule::SmartResize {
                    min_pixels,
                    max_pixels,
                },
                _,
            )) => {
                let Layout::Qwen2VlPatches(g) = &self.spec.layout else {
                    unreachable!("checked in new")
                };
                smart_resize(
                    height,
                    width,
                    g.patch_size * g.merge_size,
                    min_pixels,
                    max_pixels,
                )?
            }
        };
        match &self.spec.layout {
            Layout::ChannelsFirst { crop, .. } => {
                let (h, w) = crop.unwrap_or(resized);
                Ok(OutputPlan {
                    resized,
                    shape: vec![n, 3, h, w],
                    grid: None,
                    tiles: None,
                })
            }
            Layout::AnyRes { tile, pinpoints } => {
                let canvas = select_best_resolution((height, width), pinpoints)
                    .expect("pinpoints checked non-empty in new");
                let fitted = fit_size((height, width), canvas);
                let tiles = TilePlan {
                    canvas,
                    fitted,
                    offset: ((canvas.0 - fitted.0) / 2, (canvas.1 - fitted.1) / 2),
                    grid: (canvas.0 / tile, canvas.1 / tile),
                };
                Ok(OutputPlan {
                    resized,
                    shape: vec![n, 1 + tiles.grid.0 * tiles.grid.1, 3, *tile, *tile],
                    grid: None,
                    tiles: Some(tiles),
                })
            }
            Layout::Qwen2VlPatches(g) => {
                let f = g.patch_size * g.merge_size;
                if resized.0 % f != 0 || resized.1 % f != 0 {
                    return Err(PreprocessError::BadShape(format!(
                        "image of {}x{} is not a multiple of patch_size * merge_size = {f}",
                        resized.0, resized.1
                    )));
                }
                let grid = (resized.0 / g.patch_size, resized.1 / g.patch_size);
                Ok(OutputPlan {
                    resized,
                    shape: vec![n * grid.0 * grid.1, g.row_len()],
                    grid: Some(grid),
                    tiles: None,
                })
            }
        }
    }

    /// The part of the resized image the channel-first writers take: the
    /// center crop, or all of it (LLaVA-NeXT's base tile); `None` for the
    /// Qwen2-VL layout.
    fn window(&self, resized: (usize, usize)) -> Option<Window> {
        let crop = match &self.spec.layout {
            Layout::ChannelsFirst { crop } => *crop,
            Layout::AnyRes { .. } => None,
            Layout::Qwen2VlPatches(_) => return None,
        };
        let Some((ch, cw)) = crop else {
            return Some(Window {
                top: 0,
                left: 0,
                height: resized.0,
                width: resized.1,
            });
        };
        let offset = |image: usize, crop: usize| -> isize {
            let (image, crop) = (image as isize, crop as isize);
            match self.spec.backend {
                Backend::Pillow | Backend::Pillow13 => (image - crop).div_euclid(2),
                Backend::Torchvision if crop > image => -((crop - image) / 2),
                Backend::Torchvision => (image - crop) / 2,
            }
        };
        Some(Window {
            top: offset(resized.0, ch),
            left: offset(resized.1, cw),
            height: ch,
            width: cw,
        })
    }

    /// Writes one resized image in the output layout; `stream`: with streaming
    /// stores.
    fn write<T: OutValue, R: RowSource + ?Sized>(
        &self,
        stream: bool,
        rows: &mut R,
        resized: (usize, usize),
        window: Option<Window>,
        dst: &mut [T],
    ) {
        match &self.spec.layout {
            Layout::ChannelsFirst { .. } | Layout::AnyRes { .. } if stream => {
                layout::write_chw_streaming(
                    rows,
                    resized,
                    window.expect("set for this layout"),
                    &self.table,
                    dst,
                )
            }
            Layout::ChannelsFirst { .. } | Layout::AnyRes { .. } => layout::write_chw(
                rows,
                resized,
                window.expect("set for this layout"),
                &self.table,
                dst,
            ),
            Layout::Qwen2VlPatches(g) if stream => {
                layout::write_qwen_patches_streaming(rows, resized, *g, &self.table, dst)
            }
            Layout::Qwen2VlPatches(g) => {
                layout::write_qwen_patches(rows, resized, *g, &self.table, dst)
            }
        }
    }

    /// Calls `f` with the rows of `src` (`from`) resized to `to`: the vertical
    /// pass runs band by band as the writer asks for rows.
    fn with_rows(
        &self,
        kernels: pillow::Kernels,
        scratch: &mut pillow::PillowScratch,
        src: &[u8],
        from: (usize, usize),
        to: (usize, usize),
        f: impl FnOnce(&mut dyn RowSource),
    ) {
        match self.spec.resize {
            Some((_, filter)) if to != from => {
                let mut rows =
                    pillow::begin(kernels, self.spec.backend, scratch, src, from, to, filter);
                f(&mut rows)
            }
            _ => f(&mut ImageRows {
                image: src,
                row_len: from.1 * 3,
            }),
        }
    }

    /// Preprocesses `n` HWC RGB8 images of `height` x `width` stored
    /// contiguously in `input` into `out` (length [`OutputPlan::len`]),
    /// one image per rayon task.
    pub fn run<T: OutValue>(
        &self,
        input: &[u8],
        n: usize,
        height: usize,
        width: usize,
        out: &mut [T],
    ) -> Result<OutputPlan, PreprocessError> {
        let plan = self.plan(n, height, width)?;
        let image_bytes = height * width * 3;
        if input.len() != n * image_bytes {
            return Err(PreprocessError::BadShape(format!(
                "input holds {} bytes, expected {n} x {height} x {width} x 3 = {}",
                input.len(),
                n * image_bytes
            )));
        }
        if out.len() != plan.len() {
            return Err(PreprocessError::OutputSize {
                expected: plan.len(),
                got: out.len(),
            });
        }
        let per_image = plan.len() / n;
        let resized = plan.resized;
        let window = self.window(resized);
        // The first image of each output row is the resized image; the LLaVA-NeXT
        // layout adds the tiles of a second resize (its own scratch: other weights).
        let first_len = match plan.tiles {
            Some(_) => 3 * resized.0 * resized.1,
            None => per_image,
        };
        let kernels = pillow::Kernels::best();
        // Outputs larger than the caches go out with streaming stores.
        let stream = std::mem::size_of_val(out) >= STREAM_BYTES;
        input
            .par_chunks_exact(image_bytes)
            .zip(out.par_chunks_exact_mut(per_image))
            .for_each_init(
                // The second scratch only for the tiles (taken lazily: an unused one
                // would come back first from the stack and be used cold next time).
                || (Lease::take(&self.scratch), None),
                |(first, second), (src, dst)| {
                    let (dst, tiles_out) = dst.split_at_mut(first_len);
                    self.with_rows(
                        kernels,
                        first.get(),
                        src,
                        (height, width),
                        resized,
                        |rows| self.write(stream, rows, resized, window, dst),
                    );
                    if let (Some(t), Layout::AnyRes { tile, .. }) = (plan.tiles, &self.spec.layout)
                    {
                        let second = second.get_or_insert_with(|| Lease::take(&self.scratch));
                        self.with_rows(
                            kernels,
                            second.get(),
                            src,
                            (height, width),
                            t.fitted,
                            |rows| {
                                layout::write_tiles(
                                    Convert::best(),
                                    stream,
                                    rows,
                                    t.fitted,
                                    t.offset,
                                    *tile,
                                    t.grid,
                                    &self.table,
                                    tiles_out,
                                )
                            },
                        );
                    }
                },
            );
        Ok(plan)
    }
}

#[cfg(test)]
mod tests;
