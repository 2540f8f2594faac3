//! The environment interface every game implements (envs/ crate), and the
//! observation geometry shared by all of them.

use serde_json::{Map, Value};

/// Observation height in pixels.
pub const OBS_H: usize = 300;
/// Observation width in pixels.
pub const OBS_W: usize = 300;
/// Bytes of one RGB observation.
pub const OBS_BYTES: usize = OBS_H * OBS_W * 3;

/// Per-step info as a JSON object (keys fixed by each game, e.g. "Target").
pub type Info = Map<String, Value>;

/// Outcome of one step of one environment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
}
