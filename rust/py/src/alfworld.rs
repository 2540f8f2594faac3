//! Binding of the ALFWorld text-scene renderer, used by the ALFWorldTW-v0
//! adapter (python/vlmrl_fast/alfworld_tw.py) to draw TextWorld states with
//! the engine's ALFWorld look.

use numpy::ndarray::Array3;
use numpy::{IntoPyArray, PyArray3};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use vlmrl_core::env::{OBS_BYTES, OBS_H, OBS_W};
use vlmrl_core::render::Canvas;
use vlmrl_envs::alfworld::image::{render_text_scene, TextScene};
use vlmrl_envs::alfworld::task::TASK_TYPES;

/// Draws an ALFWorld view from text: the task, the "At: ..." line, the names
/// seen there, the held object and the last feedback. Returns a new
/// [300, 300, 3] uint8 array.
#[pyfunction]
#[pyo3(signature = (task, location, items, held, feedback))]
fn alfworld_text_image<'py>(
    py: Python<'py>,
    task: String,
    location: String,
    items: Vec<String>,
    held: Option<String>,
    feedback: String,
) -> Bound<'py, PyArray3<u8>> {
    let buf = py.detach(|| {
        let mut buf = vec![0u8; OBS_BYTES];
        let scene = TextScene {
            task: &task,
            location: &location,
            items: &items,
            held: held.as_deref(),
            feedback: &feedback,
        };
        render_text_scene(&mut Canvas::new(&mut buf), &scene);
        buf
    });
    Array3::from_shape_vec((OBS_H, OBS_W, 3), buf)
        .expect("one observation")
        .into_pyarray(py)
}

/// Registers the ALFWorld helpers in `vlmrl_fast._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(alfworld_text_image, m)?)?;
    let names: Vec<&str> = TASK_TYPES.iter().map(|t| t.name()).collect();
    m.add("ALFWORLD_TASK_TYPES", PyTuple::new(m.py(), names)?)?;
    Ok(())
}
