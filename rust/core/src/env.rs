//! The environment interface every game implements (envs/ crate), and the
//! observation geometry shared by all of them.
//!
//! The vector env (`vecenv`) drives any `Box<dyn Env>` and knows nothing about
//! the games: it owns one [`Rng`] and one 300x300x3 canvas per env, validates
//! actions with [`Env::accepts_action`], and adds the generic info keys
//! ("text" from [`Env::text`], "admissible_commands" for envs whose action set
//! changes from step to step).

use serde_json::{Map, Value};

use crate::error::EnvError;
use crate::render::Canvas;
use crate::rng::Rng;

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

impl Transition {
    /// A step that neither terminates nor truncates.
    pub fn running(reward: f64) -> Self {
        Transition {
            reward,
            terminated: false,
            truncated: false,
        }
    }
    /// True when the episode is over (terminated or truncated).
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// One environment. Implementations live in the `vlmrl-envs` crate, one file
/// per game, and are created by its registry (`vlmrl_envs::make`).
///
/// Contract:
/// - `reset` must be called before `step`; the engine enforces it.
/// - All randomness comes from the `rng` passed in, so the same seed gives the
///   same episode whatever the thread count.
/// - `render` writes the observation of the current state into `canvas`. With
///   `full == false` the canvas still holds what this env drew last (after its
///   last reset or step), so the env may redraw only what changed; with
///   `full == true` it must draw everything. The pixels must be the same
///   either way.
pub trait Env: Send {
    /// The registered id, e.g. "Points24-v0".
    fn id(&self) -> &str;

    /// The names of the actions available now, in action-index order.
    fn action_names(&self) -> Vec<String>;

    /// The number of actions available now (`action_names().len()`; override
    /// when that is cheaper to know than the names).
    fn num_actions(&self) -> usize {
        self.action_names().len()
    }

    /// True when the action set changes from step to step (ALFWorld's
    /// admissible commands): the engine then reports the current names in
    /// info["admissible_commands"].
    fn dynamic_actions(&self) -> bool {
        false
    }

    /// Whether `action` may be passed to `step` now. Default: `0..num_actions()`.
    /// An env that gives meaning to other values (ALFWorld: -1 = an
    /// inadmissible command) overrides this.
    fn accepts_action(&self, action: i64) -> bool {
        action >= 0 && (action as u64) < self.num_actions() as u64
    }

    /// Starts a new episode, from `state` when given (the game's explicit
    /// state format, e.g. {"cards": ["H5", "S3"]}), else drawn from `rng`.
    fn reset(&mut self, rng: &mut Rng, state: Option<&Value>) -> Result<(), EnvError>;

    /// Advances one step with an action that `accepts_action` approved.
    fn step(&mut self, action: i64, rng: &mut Rng) -> Result<Transition, EnvError>;

    /// The game's info keys for the current state (e.g. "Cards", "Formula").
    fn info(&self) -> Info;

    /// One line describing what the image shows, for text-only agents
    /// (info["text"]), e.g. "Target number: 3. Current number: 1.".
    fn text(&self) -> String;

    /// The action the built-in expert policy takes now.
    fn expert_action(&self) -> i64;

    /// The expert's whole plan from the current state, as text, where the
    /// game has one: the formula games' full solution extending the current
    /// formula (e.g. "(10-4)*(3+1)"); `Some("")` when no solution exists; None
    /// for games whose expert decides step by step. Default: None.
    fn expert_plan(&self) -> Option<String> {
        None
    }

    /// Draws the current state into `canvas` (see the trait docs for `full`).
    fn render(&mut self, canvas: &mut Canvas<'_>, full: bool);

    /// A key of the current state, equal for two envs exactly when they are in
    /// the same state (GiGPO's step groups). Default: 64-bit FNV-1a of the env
    /// id, `info()` as JSON (keys sorted) and `text()`, which together
    /// describe the state of every game here; stable across runs and threads.
    fn state_key(&self) -> u64 {
        let info = Value::Object(self.info()).to_string();
        fnv1a64(
            [self.id(), "\0", &info, "\0", &self.text()]
                .concat()
                .as_bytes(),
        )
    }
}

/// 64-bit FNV-1a hash (deterministic, no per-process random key).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
