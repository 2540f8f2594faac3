//! Python exception classes of the engine, and the mapping from core errors.
//! Every class subclasses ValueError, TypeError or RuntimeError, so callers
//! can catch them by their builtin base.

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use vlmrl_core::error::{EngineError, EnvError, VecEnvError};

create_exception!(
    vlmrl_fast._core,
    InvalidActionError,
    PyValueError,
    "An action an env does not accept (names the env index and the value)."
);
create_exception!(
    vlmrl_fast._core,
    InvalidStateError,
    PyValueError,
    "A malformed explicit state passed to reset (names the env index and the value)."
);
create_exception!(
    vlmrl_fast._core,
    EnvArgumentError,
    PyValueError,
    "A bad argument: unknown env id, unknown kwarg, wrong shape or size."
);
create_exception!(
    vlmrl_fast._core,
    ActionTypeError,
    PyTypeError,
    "Actions of the wrong type or dtype."
);
create_exception!(
    vlmrl_fast._core,
    ResetNeededError,
    PyRuntimeError,
    "step() before reset(), or after an env broke."
);
create_exception!(
    vlmrl_fast._core,
    EnvPanicError,
    PyRuntimeError,
    "An env's code panicked; the env must be reset."
);

fn env_error(prefix: String, e: &EnvError) -> PyErr {
    let msg = format!("{prefix}{e}");
    match e {
        EnvError::InvalidAction { .. } => InvalidActionError::new_err(msg),
        EnvError::InvalidState(_) => InvalidStateError::new_err(msg),
        EnvError::InvalidArgument(_) | EnvError::UnknownEnv(_) => EnvArgumentError::new_err(msg),
        EnvError::ResetNeeded => ResetNeededError::new_err(msg),
        EnvError::Panic(_) => EnvPanicError::new_err(msg),
    }
}

/// A core error of one env (no index) as a Python exception.
pub fn from_env(e: EnvError) -> PyErr {
    env_error(String::new(), &e)
}

/// A vector-env error as a Python exception whose message names the env.
pub fn from_engine(e: EngineError) -> PyErr {
    match e {
        EngineError::Env(VecEnvError { index, source }) => {
            env_error(format!("env {index}: "), &source)
        }
        other => EnvArgumentError::new_err(other.to_string()),
    }
}

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("InvalidActionError", py.get_type::<InvalidActionError>())?;
    m.add("InvalidStateError", py.get_type::<InvalidStateError>())?;
    m.add("EnvArgumentError", py.get_type::<EnvArgumentError>())?;
    m.add("ActionTypeError", py.get_type::<ActionTypeError>())?;
    m.add("ResetNeededError", py.get_type::<ResetNeededError>())?;
    m.add("EnvPanicError", py.get_type::<EnvPanicError>())?;
    Ok(())
}
