//! Binding of `vlmrl_core::preprocess`: the `Preprocessor` class.
//!
//! Observations are read in place from the caller's uint8 array; the output is
//! a float32 numpy array (or, for `dtype="bfloat16"`, a uint16 array holding
//! bfloat16 bits) allocated here or passed in as `out`, filled with the GIL
//! released.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use numpy::ndarray::{ArrayViewD, IxDyn};

use numpy::{
    Element, PyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use vlmrl_core::preprocess::{
    Backend, Bf16, Filter, Layout, OutValue, PatchGeometry, Pipeline, PipelineSpec,
    PreprocessError as CoreError, SizeRule,
};

create_exception!(
    _core,
    PreprocessError,
    PyValueError,
    "Observations or preprocessing settings that the pipeline cannot take (shape, size, empty batch)."
);
create_exception!(
    _core,
    PreprocessTypeError,
    PyTypeError,
    "Observations of the wrong type: the pipeline takes a uint8 numpy array [N, H, W, 3]."
);
create_exception!(
    _core,
    PreprocessInternalError,
    PyRuntimeError,
    "A bug inside the native preprocessing (a Rust panic), reported instead of crashing."
);

/// Qwen2-VL's (grid_h, grid_w) of each image, `None` for other layouts.
type Grid = Option<(usize, usize)>;

fn to_py(e: CoreError) -> PyErr {
    PreprocessError::new_err(e.to_string())
}

fn triple(name: &str, v: Option<Vec<f64>>) -> PyResult<Option<[f64; 3]>> {
    match v {
        None => Ok(None),
        Some(v) if v.len() == 3 => Ok(Some([v[0], v[1], v[2]])),
        Some(v) if v.len() == 1 => Ok(Some([v[0]; 3])),
        Some(v) => Err(PreprocessError::new_err(format!(
            "{name} must have 1 or 3 values, got {}",
            v.len()
        ))),
    }
}

/// Native preprocessing pipeline: uint8 observations [N, H, W, 3] to pixel_values.
#[pyclass(name = "Preprocessor", module = "vlmrl_fast._core", frozen)]
pub struct PyPreprocessor {
    pipeline: Pipeline,
    pool: Arc<BufferPool>,
}

/// Most bytes of freed output buffers a pipeline keeps for reuse.
const POOL_BYTES: usize = 1 << 30;

/// An output buffer of one element type.
enum PoolVec {
    F32(Vec<f32>),
    U16(Vec<u16>),
}

impl PoolVec {
    fn bytes(&self) -> usize {
        match self {
            PoolVec::F32(v) => v.len() * 4,
            PoolVec::U16(v) => v.len() * 2,
        }
    }
}

/// Element types of pooled outputs.
trait PoolElem: Element + Copy + Default {
    fn wrap(v: Vec<Self>) -> PoolVec;
    fn unwrap(p: &PoolVec) -> Option<&Vec<Self>>;
    fn take(p: PoolVec) -> Result<Vec<Self>, PoolVec>;
}

/// `PoolElem` for an element type stored in `PoolVec::$variant`.
macro_rules! pool_elem {
    ($t:ty, $variant:ident) => {
        impl PoolElem for $t {
            fn wrap(v: Vec<Self>) -> PoolVec {
                PoolVec::$variant(v)
            }
            fn unwrap(p: &PoolVec) -> Option<&Vec<Self>> {
                match p {
                    PoolVec::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn take(p: PoolVec) -> Result<Vec<Self>, PoolVec> {
                match p {
                    PoolVec::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
        }
    };
}

pool_elem!(f32, F32);
pool_elem!(u16, U16);

/// Output buffers given back when the numpy arrays over them are freed, so
/// that the next batch of the same shape writes into memory that is already
/// mapped: a fresh 80 MB array costs more in page faults than the whole
/// preprocessing. Holds at most [`POOL_BYTES`].
#[derive(Default)]
struct BufferPool {
    free: Mutex<Vec<PoolVec>>,
}

impl BufferPool {
    /// A buffer for `len` values (see [`aligned`]): a freed one, or a new zeroed one.
    fn take<E: PoolElem>(&self, len: usize) -> Vec<E> {
        let padded = len + pad::<E>();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let found = free
            .iter()
            .position(|p| E::unwrap(p).is_some_and(|v| v.len() == padded));
        match found.map(|i| E::take(free.swap_remove(i))) {
            Some(Ok(v)) => v,
            _ => {
                drop(free);
                let v = vec![E::default(); padded];
                advise_huge_pages(&v);
                v
            }
        }
    }

    /// Keeps `buf` for reuse while the pool stays under its byte budget.
    fn give_back(&self, buf: PoolVec) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = free.iter().map(PoolVec::bytes).sum();
        if held + buf.bytes() <= POOL_BYTES {
            free.push(buf);
        }
    }
}

/// Asks Linux for transparent huge pages over the 2 MiB-aligned interior of a new pooled buffer,
/// before anything touches it (a large zeroed allocation is fresh, untouched memory). Outputs of
/// 64 images are 20-150 MB, written once per batch: with 4 KiB pages every 4 KiB of streaming
/// stores needs its own page-table walk. In-process A/B (blocks of five batches, three runs, 64 x
/// 300x300): Qwen2-VL 5-6 % and CLIP-336 4-5 % faster at the median. Where the kernel refuses
/// (no THP, or `never`), nothing changes; the advice is a hint, its result is not needed.
fn advise_huge_pages<E>(v: &[E]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + std::mem::size_of_val(v);
        let (a, b) = (start.next_multiple_of(HUGE), end & !(HUGE - 1));
        if b >= a + HUGE {
            // SAFETY: [a, b) lies inside `v`'s allocation; MADV_HUGEPAGE changes no contents.
            unsafe {
                libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// Elements a pooled buffer holds beyond its values, so that they can start
/// on a cache line: vector stores then never straddle two lines (in-process
/// A/B: SigLIP-384 batches ~13 % faster than at a 16-byte offset, CLIP ~2 %).
fn pad<E>() -> usize {
    64 / std::mem::size_of::<E>()
}

/// Where the `len` values of a pooled buffer (`len + pad` elements) start: the
/// first 64-byte boundary.
fn aligned<E>(v: &[E], len: usize) -> std::ops::Range<usize> {
    let off = v.as_ptr().align_offset(64);
    let off = if off <= pad::<E>() { off } else { 0 };
    off..off + len
}

/// Owner of a pooled output buffer, the base object of the numpy array
/// returned over it; gives the buffer back to its pool when Python frees it.
#[pyclass(module = "vlmrl_fast._core", frozen)]
struct PooledBuffer {
    data: Option<PoolVec>,
    pool: Arc<BufferPool>,
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.data.take() {
            self.pool.give_back(buf);
        }
    }
}

#[pymethods]
impl PyPreprocessor {
    #[new]
    #[pyo3(signature = (
        *, layout, resample=None, shortest_edge=None, height=None, width=None, min_pixels=None, max_pixels=None,
        crop_height=None, crop_width=None, backend="pil", rescale_factor=None, image_mean=None,
        image_std=None, patch_size=14, merge_size=2, temporal_patch_size=2, image_grid_pinpoints=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        layout: &str,
        resample: Option<i64>,
        shortest_edge: Option<usize>,
        height: Option<usize>,
        width: Option<usize>,
        min_pixels: Option<usize>,
        max_pixels: Option<usize>,
        crop_height: Option<usize>,
        crop_width: Option<usize>,
        backend: &str,
        rescale_factor: Option<f64>,
        image_mean: Option<Vec<f64>>,
        image_std: Option<Vec<f64>>,
        patch_size: usize,
        merge_size: usize,
        temporal_patch_size: usize,
        image_grid_pinpoints: Option<Vec<(usize, usize)>>,
    ) -> PyResult<Self> {
        let bad = |m: String| Err(PreprocessError::new_err(m));
        let backend = match backend {
            "pil" => Backend::Pillow,
            "pil13" => Backend::Pillow13,
            "torchvision" => Backend::Torchvision,
            other => {
                return bad(format!(
                    "backend must be 'pil', 'pil13' or 'torchvision', got {other:?}"
                ))
            }
        };
        let layout = match layout {
            "channels_first" => {
                let crop = match (crop_height, crop_width) {
                    (Some(h), Some(w)) => Some((h, w)),
                    (None, None) => None,
                    _ => return bad("crop_height and crop_width must be given together".into()),
                };
                Layout::ChannelsFirst { crop }
            }
            "qwen2_vl" => Layout::Qwen2VlPatches(PatchGeometry {
                patch_size,
                merge_size,
                temporal_patch_size,
            }),
            "llava_next" => {
                let tile =
                    match (crop_height, crop_width) {
                        (Some(h), Some(w)) if h == w => h,
                        _ => return bad(
                            "the llava_next layout needs square tiles: crop_height == crop_width"
                                .into(),
                        ),
                    };
                let Some(pinpoints) = image_grid_pinpoints else {
                    return bad("the llava_next layout needs image_grid_pinpoints".into());
                };
                Layout::AnyRes { tile, pinpoints }
            }
            other => {
                return bad(format!(
                    "layout must be 'channels_first', 'qwen2_vl' or 'llava_next', got {other:?}"
                ))
            }
        };
        let resize = match resample {
            None => None,
            Some(code) => {
                let Some(filter) = Filter::from_pil_code(code) else {
                    return bad(format!(
                        "resample {code} is not supported (PIL codes 1-5: LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING)"
                    ));
                };
                let rule = match (&layout, shortest_edge, height, width) {
                    (Layout::Qwen2VlPatches(_), ..) => match (min_pixels, max_pixels) {
                        (Some(min_pixels), Some(max_pixels)) => SizeRule::SmartResize {
                            min_pixels,
                            max_pixels,
                        },
                        _ => {
                            return bad("the qwen2_vl layout needs min_pixels and max_pixels".into())
                        }
                    },
                    (_, Some(s), None, None) => SizeRule::ShortestEdge(s),
                    (_, None, Some(height), Some(width)) => SizeRule::Exact { height, width },
                    _ => return bad("give either shortest_edge or height and width".into()),
                };
                Some((rule, filter))
            }
        };
        let normalize = match (
            triple("image_mean", image_mean)?,
            triple("image_std", image_std)?,
        ) {
            (Some(m), Some(s)) => Some((m, s)),
            (None, None) => None,
            _ => return bad("image_mean and image_std must be given together".into()),
        };
        let spec = PipelineSpec {
            backend,
            resize,
            rescale: rescale_factor,
            normalize,
            layout,
        };
        Ok(Self {
            pipeline: Pipeline::new(spec).map_err(to_py)?,
            pool: Arc::new(BufferPool::default()),
        })
    }

    /// Output shape and Qwen2-VL grid (grid_h, grid_w) for n images of height x width.
    fn plan(&self, n: usize, height: usize, width: usize) -> PyResult<(Vec<usize>, Grid)> {
        let plan = self.pipeline.plan(n, height, width).map_err(to_py)?;
        Ok((plan.shape, plan.grid))
    }

    /// Preprocesses `obs` (uint8 [N, H, W, 3], C-contiguous, read in place).
    /// Returns (pixel_values, grid or None): float32 values, or for
    /// `dtype="bfloat16"` uint16 holding bfloat16 bits (view them as
    /// torch.bfloat16); writes into `out` (that element type) when given.
    #[pyo3(signature = (obs, out=None, dtype="float32"))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        obs: &Bound<'py, PyAny>,
        out: Option<Bound<'py, PyAny>>,
        dtype: &str,
    ) -> PyResult<(Bound<'py, PyAny>, Grid)> {
        let Ok(arr) = obs.cast::<PyUntypedArray>() else {
            return Err(PreprocessTypeError::new_err(format!(
                "observations must be a numpy uint8 array [N, H, W, 3], got {}",
                obs.get_type().name()?
            )));
        };
        if !arr.dtype().is_equiv_to(&u8::get_dtype(py)) {
            return Err(PreprocessTypeError::new_err(format!(
                "observations must have dtype uint8, got {}",
                arr.dtype().str()?
            )));
        }
        let shape = arr.shape().to_vec();
        if shape.len() != 4 {
            return Err(PreprocessError::new_err(format!(
                "observations must have 4 dimensions [N, H, W, 3], got shape {shape:?}"
            )));
        }
        if shape[3] != 3 {
            return Err(PreprocessError::new_err(format!(
                "observations must have 3 channels (RGB) in the last dimension, got shape {shape:?}"
            )));
        }
        let (n, h, w) = (shape[0], shape[1], shape[2]);
        let plan = self.pipeline.plan(n, h, w).map_err(to_py)?;
        let obs = arr.cast::<PyArray<u8, numpy::Ix4>>()?.try_readonly()?;
        let src = obs
            .as_slice()
            .map_err(|_| PreprocessError::new_err("observations must be C-contiguous"))?;
        let out = match dtype {
            "float32" => {
                let out = typed_out::<f32>(out, "float32")?;
                self.fill(py, src, (n, h, w), &plan.shape, out, as_f32)?
                    .into_any()
            }
            "bfloat16" => {
                let out = typed_out::<u16>(out, "uint16 (bfloat16 bits)")?;
                self.fill(py, src, (n, h, w), &plan.shape, out, as_bf16)?
                    .into_any()
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "dtype must be 'float32' or 'bfloat16', got {other:?}"
                )))
            }
        };
        Ok((out, plan.grid))
    }
}

fn as_f32(d: &mut [f32]) -> &mut [f32] {
    d
}

fn as_bf16(d: &mut [u16]) -> &mut [Bf16] {
    // SAFETY: Bf16 is a repr(transparent) u16: same size, alignment and validity.
    unsafe { std::slice::from_raw_parts_mut(d.as_mut_ptr().cast::<Bf16>(), d.len()) }
}

/// `out` as an array of `E`, or a clear error naming the expected element type.
fn typed_out<'py, E: Element>(
    out: Option<Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Option<Bound<'py, PyArrayDyn<E>>>> {
    match out {
        None => Ok(None),
        Some(o) => match o.cast::<PyArrayDyn<E>>() {
            Ok(a) => Ok(Some(a.clone())),
            Err(_) => Err(PreprocessTypeError::new_err(format!(
                "out must be a numpy {what} array, got {}",
                o.repr()?.to_string().chars().take(60).collect::<String>()
            ))),
        },
    }
}

impl PyPreprocessor {
    /// Runs the pipeline into `dst` with the GIL released; a panic becomes an exception.
    fn run_into<T: OutValue>(
        &self,
        py: Python<'_>,
        src: &[u8],
        (n, h, w): (usize, usize, usize),
        dst: &mut [T],
    ) -> PyResult<()> {
        let pipeline = &self.pipeline;
        match py.detach(|| catch_unwind(AssertUnwindSafe(|| pipeline.run(src, n, h, w, dst)))) {
            Ok(r) => r.map(|_| ()).map_err(to_py),
            Err(_) => Err(PreprocessInternalError::new_err(
                "native preprocessing panicked",
            )),
        }
    }

    /// Runs the pipeline into `out`, or into a pooled buffer returned as a new array.
    fn fill<'py, E: PoolElem, T: OutValue>(
        &self,
        py: Python<'py>,
        src: &[u8],
        nhw: (usize, usize, usize),
        shape: &[usize],
        out: Option<Bound<'py, PyArrayDyn<E>>>,
        cast: fn(&mut [E]) -> &mut [T],
    ) -> PyResult<Bound<'py, PyArrayDyn<E>>> {
        if let Some(o) = out {
            if o.shape() != shape {
                return Err(PreprocessError::new_err(format!(
                    "out has shape {:?}, expected {:?}",
                    o.shape(),
                    shape
                )));
            }
            {
                let mut dst = o.try_readwrite()?;
                let dst = dst
                    .as_slice_mut()
                    .map_err(|_| PreprocessError::new_err("out must be C-contiguous"))?;
                self.run_into(py, src, nhw, cast(dst))?;
            }
            return Ok(o);
        }
        let len: usize = shape.iter().product();
        let mut buf: Vec<E> = self.pool.take(len);
        // The heap block does not move with the Vec: the range stays valid below.
        let values = aligned(&buf, len);
        if let Err(e) = self.run_into(py, src, nhw, cast(&mut buf[values.clone()])) {
            self.pool.give_back(E::wrap(buf));
            return Err(e);
        }
        let owner = Bound::new(
            py,
            PooledBuffer {
                data: Some(E::wrap(buf)),
                pool: Arc::clone(&self.pool),
            },
        )?;
        let data = E::unwrap(owner.get().data.as_ref().expect("set just above"))
            .expect("wrapped as E just above");
        let view = ArrayViewD::from_shape(IxDyn(shape), &data[values])
            .map_err(|e| PreprocessInternalError::new_err(format!("output view: {e}")))?;
        // SAFETY: the array's base object is `owner`, which owns the buffer and never
        // touches it (nor reallocates it) until Python frees the owner, after the array.
        Ok(unsafe { PyArrayDyn::borrow_from_array(&view, owner.clone().into_any()) })
    }
}

/// Adds the preprocessing class and its exceptions to `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyPreprocessor>()?;
    m.add("PreprocessError", py.get_type::<PreprocessError>())?;
    m.add("PreprocessTypeError", py.get_type::<PreprocessTypeError>())?;
    m.add(
        "PreprocessInternalError",
        py.get_type::<PreprocessInternalError>(),
    )?;
    Ok(())
}
