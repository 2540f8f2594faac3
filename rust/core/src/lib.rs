//! vlmrl-core: the pure-Rust engine of vlmrl_fast.
//!
//! No pyo3 here: everything is testable with `cargo test` and callable from
//! the thin binding crate in `rust/py`.

pub mod buffer;
pub mod card;
pub mod env;
pub mod error;
pub mod font;
pub mod gae;
pub mod parser;
pub mod preprocess;
pub mod render;
pub mod rng;
pub mod vecenv;
pub mod widgets;

/// Crate version, reported by the Python package.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
