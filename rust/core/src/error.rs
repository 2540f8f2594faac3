//! Errors of the engine core. The binding maps each variant to a specific
//! Python exception class (ValueError / TypeError / RuntimeError subclasses).

use thiserror::Error;

/// What went wrong inside one environment.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EnvError {
    /// An action index the env does not accept at this step.
    #[error("action {value} is out of range: this env accepts 0..{num_actions}")]
    InvalidAction { value: i64, num_actions: usize },
    /// An explicit state (reset option) that cannot be loaded.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// Constructor arguments the env does not accept.
    #[error("invalid env argument: {0}")]
    InvalidArgument(String),
    /// An env id that is not registered.
    #[error("unknown env id {0:?}")]
    UnknownEnv(String),
    /// step() was called before reset(), or after a worker panic.
    #[error("the env must be reset before it can step")]
    ResetNeeded,
    /// A panic inside the env's code, caught at the thread boundary.
    #[error("the env panicked: {0}")]
    Panic(String),
}

/// An [`EnvError`] of one env of a vector env, naming that env's index.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("env {index}: {source}")]
pub struct VecEnvError {
    pub index: usize,
    #[source]
    pub source: EnvError,
}

/// Errors of the vector env itself (arguments that concern all envs).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    #[error(transparent)]
    Env(#[from] VecEnvError),
    /// A length that does not match the number of envs.
    #[error("{what}: expected {expected} values (one per env), got {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Any other bad argument (e.g. num_envs = 0).
    #[error("{0}")]
    Argument(String),
}

/// Turns a caught panic payload into a message.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}
