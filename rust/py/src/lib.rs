//! The pyo3 binding crate: converts arguments, calls vlmrl-core / vlmrl-envs,
//! converts results and errors. No engine logic lives here.

pub mod parser;

use pyo3::prelude::*;

mod buffer;
mod env;
mod errors;
mod json;
mod preprocess;

/// The private native module `vlmrl_fast._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", vlmrl_core::VERSION)?;
    errors::register(m)?;
    env::register(m)?;
    buffer::register(m)?;
    parser::register(m)?;
    preprocess::register(m)?;
    Ok(())
}
