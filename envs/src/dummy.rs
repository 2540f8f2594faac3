//! Dummy-v0: a synthetic env that exercises the engine (auto-reset, seeding,
//! threads, panics, dynamic action sets) apart from any game's rules.
//!
//! An episode starts at a random `start` in 0..1000 and lasts
//! `episode_length` steps; reward = action + step; the final step terminates
//! when `start` is even and truncates when it is odd. The frame is filled
//! with a colour derived from (start, step). With `dynamic_actions` the
//! number of actions is 2 + step % 3 and -1 is accepted (as ALFWorld's
//! inadmissible command). `panic_on_action` makes that action panic.

use serde_json::{json, Value};
use vlmrl_core::env::{Env, Info, Transition};
use vlmrl_core::error::EnvError;
use vlmrl_core::render::Canvas;
use vlmrl_core::rng::Rng;

use crate::{kwargs, Kwargs};

/// The synthetic engine-test env.
pub struct Dummy {
    episode_length: i64,
    num_actions: usize,
    dynamic: bool,
    panic_on_action: i64,
    start: i64,
    step: i64,
    last_action: i64,
}

/// Registry constructor. kwargs: episode_length (5), num_actions (3),
/// dynamic_actions (false), panic_on_action (none).
pub fn make(kw: &Kwargs) -> Result<Box<dyn Env>, EnvError> {
    let id = "Dummy-v0";
    kwargs::check_known(
        id,
        kw,
        &[
            "episode_length",
            "num_actions",
            "dynamic_actions",
            "panic_on_action",
        ],
    )?;
    Ok(Box::new(Dummy {
        episode_length: kwargs::int(id, kw, "episode_length", 5, 1, 1_000_000)?,
        num_actions: kwargs::int(id, kw, "num_actions", 3, 1, 1000)? as usize,
        dynamic: kwargs::boolean(id, kw, "dynamic_actions", false)?,
        panic_on_action: kwargs::int(id, kw, "panic_on_action", i64::MIN, i64::MIN, i64::MAX)?,
        start: 0,
        step: 0,
        last_action: 0,
    }))
}

impl Env for Dummy {
    fn id(&self) -> &str {
        "Dummy-v0"
    }
    fn action_names(&self) -> Vec<String> {
        let n = if self.dynamic {
            2 + (self.step % 3) as usize
        } else {
            self.num_actions
        };
        (0..n).map(|i| format!("a{i}")).collect()
    }
    fn num_actions(&self) -> usize {
        if self.dynamic {
            2 + (self.step % 3) as usize
        } else {
            self.num_actions
        }
    }
    fn dynamic_actions(&self) -> bool {
        self.dynamic
    }
    fn accepts_action(&self, action: i64) -> bool {
        (self.dynamic && action == -1) || (action >= 0 && (action as usize) < self.num_actions())
    }
    fn reset(&mut self, rng: &mut Rng, state: Option<&Value>) -> Result<(), EnvError> {
        self.start = match state {
            None => rng.below(1000) as i64,
            Some(v) => v.get("start").and_then(Value::as_i64).ok_or_else(|| {
                EnvError::InvalidState(format!(
                    "Dummy-v0 state must be {{\"start\": int}}, got {v}"
                ))
            })?,
        };
        self.step = 0;
        self.last_action = 0;
        Ok(())
    }
    fn step(&mut self, action: i64, _rng: &mut Rng) -> Result<Transition, EnvError> {
        if action == self.panic_on_action {
            panic!("Dummy-v0 was told to panic on action {action}");
        }
        self.step += 1;
        self.last_action = action;
        let end = self.step >= self.episode_length;
        Ok(Transition {
            reward: (action + self.step) as f64,
            terminated: end && self.start % 2 == 0,
            truncated: end && self.start % 2 == 1,
        })
    }
    fn info(&self) -> Info {
        let v = json!({"start": self.start, "step": self.step, "last_action": self.last_action});
        v.as_object().cloned().unwrap_or_default()
    }
    fn text(&self) -> String {
        format!("Start {}. Step {}.", self.start, self.step)
    }
    fn expert_action(&self) -> i64 {
        0
    }
    fn render(&mut self, canvas: &mut Canvas<'_>, _full: bool) {
        let c = [
            (self.start % 256) as u8,
            (self.step % 256) as u8,
            (self.last_action & 0xff) as u8,
        ];
        canvas.fill(c);
    }
}
