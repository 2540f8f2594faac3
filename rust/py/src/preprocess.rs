//! Binding of `vlmrl_core::preprocess`: the `Preprocessor` class.
//!
//! Observations are read in place from the caller's uint8 array; the output is
//! a float32 numpy array allocated here (or passed in as `out`) and filled with
//! the GIL released.

use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::{Element, PyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use vlmrl_core::preprocess::{
    Backend, Filter, Layout, PatchGeometry, Pipeline, PipelineSpec, PreprocessError as CoreError, SizeRule,
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
}

#[pymethods]
impl PyPreprocessor {
    #[new]
    #[pyo3(signature = (
        *, layout, resample=None, shortest_edge=None, height=None, width=None, min_pixels=None, max_pixels=None,
        crop_height=None, crop_width=None, backend="pil", rescale_factor=None, image_mean=None,
        image_std=None, patch_size=14, merge_size=2, temporal_patch_size=2
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
    ) -> PyResult<Self> {
        let bad = |m: String| Err(PreprocessError::new_err(m));
        let backend = match backend {
            "pil" => Backend::Pillow,
            "torchvision" => Backend::Torchvision,
            other => return bad(format!("backend must be 'pil' or 'torchvision', got {other:?}")),
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
            other => return bad(format!("layout must be 'channels_first' or 'qwen2_vl', got {other:?}")),
        };
        let resize = match resample {
            None => None,
            Some(code) => {
                let Some(filter) = Filter::from_pil_code(code) else {
                    return bad(format!(
                        "resample {code} is not supported (PIL codes 1-5: LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING)"
                    ));
                };
                let rule = match (layout, shortest_edge, height, width) {
                    (Layout::Qwen2VlPatches(_), ..) => match (min_pixels, max_pixels) {
                        (Some(min_pixels), Some(max_pixels)) => SizeRule::SmartResize { min_pixels, max_pixels },
                        _ => return bad("the qwen2_vl layout needs min_pixels and max_pixels".into()),
                    },
                    (_, Some(s), None, None) => SizeRule::ShortestEdge(s),
                    (_, None, Some(height), Some(width)) => SizeRule::Exact { height, width },
                    _ => return bad("give either shortest_edge or height and width".into()),
                };
                Some((rule, filter))
            }
        };
        let normalize = match (triple("image_mean", image_mean)?, triple("image_std", image_std)?) {
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
        })
    }

    /// Output shape and Qwen2-VL grid (grid_h, grid_w) for n images of height x width.
    fn plan(&self, n: usize, height: usize, width: usize) -> PyResult<(Vec<usize>, Grid)> {
        let plan = self.pipeline.plan(n, height, width).map_err(to_py)?;
        Ok((plan.shape, plan.grid))
    }

    /// Preprocesses `obs` (uint8 [N, H, W, 3], C-contiguous, read in place).
    /// Returns (pixel_values float32, grid or None); writes into `out` when given.
    #[pyo3(signature = (obs, out=None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        obs: &Bound<'py, PyAny>,
        out: Option<Bound<'py, PyArrayDyn<f32>>>,
    ) -> PyResult<(Bound<'py, PyArrayDyn<f32>>, Grid)> {
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
        let out = match out {
            Some(o) => {
                if o.shape() != plan.shape.as_slice() {
                    return Err(PreprocessError::new_err(format!(
                        "out has shape {:?}, expected {:?}",
                        o.shape(),
                        plan.shape
                    )));
                }
                o
            }
            // SAFETY: every element is written by `run` before Python sees it.
            None => unsafe { PyArrayDyn::<f32>::new(py, plan.shape.clone(), false) },
        };
        {
            let mut dst = out.try_readwrite()?;
            let dst = dst
                .as_slice_mut()
                .map_err(|_| PreprocessError::new_err("out must be C-contiguous"))?;
            let pipeline = &self.pipeline;
            let result = py.detach(|| catch_unwind(AssertUnwindSafe(|| pipeline.run(src, n, h, w, dst))));
            match result {
                Ok(r) => r.map_err(to_py)?,
                Err(_) => return Err(PreprocessInternalError::new_err("native preprocessing panicked")),
            };
        }
        Ok((out, plan.grid))
    }
}

/// Adds the preprocessing class and its exceptions to `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyPreprocessor>()?;
    m.add("PreprocessError", py.get_type::<PreprocessError>())?;
    m.add("PreprocessTypeError", py.get_type::<PreprocessTypeError>())?;
    m.add("PreprocessInternalError", py.get_type::<PreprocessInternalError>())?;
    Ok(())
}
