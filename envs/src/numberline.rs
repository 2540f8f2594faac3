//! NumberLine-v0 (gym_cards rules): move "-"/"+" along 0..=max_position until
//! the current position equals the target.

use serde_json::{json, Value};
use vlmrl_core::env::{Env, Info, Transition};
use vlmrl_core::error::EnvError;
use vlmrl_core::font::{Face, Font};
use vlmrl_core::render::{Canvas, TextField, BLACK, WHITE};
use vlmrl_core::rng::Rng;

use crate::{kwargs, state, Kwargs};

const ID: &str = "NumberLine-v0";

/// The NumberLine game.
pub struct NumberLine {
    max_position: i64,
    target: i64,
    current: i64,
    steps: i64,
    target_field: TextField,
    current_field: TextField,
}

/// Registry constructor. kwargs: max_position (5).
pub fn make(kw: &Kwargs) -> Result<Box<dyn Env>, EnvError> {
    kwargs::check_known(ID, kw, &["max_position"])?;
    let max_position = kwargs::int(ID, kw, "max_position", 5, 2, 1_000_000)?;
    // As gym_cards: DejaVu Sans Bold 36 at (30, 60) and (30, 180), black on white.
    let font = Font::get(Face::Bold, 36);
    Ok(Box::new(NumberLine {
        max_position,
        target: 0,
        current: 0,
        steps: 0,
        target_field: TextField::new(30, 60, 270, 50, WHITE, BLACK, font.clone()),
        current_field: TextField::new(30, 180, 270, 50, WHITE, BLACK, font),
    }))
}

impl NumberLine {
    fn distance(&self) -> i64 {
        (self.current - self.target).abs()
    }
}

impl Env for NumberLine {
    fn id(&self) -> &str {
        ID
    }
    fn action_names(&self) -> Vec<String> {
        vec!["-".into(), "+".into()]
    }
    fn num_actions(&self) -> usize {
        2
    }
    fn reset(&mut self, rng: &mut Rng, st: Option<&Value>) -> Result<(), EnvError> {
        match st {
            None => {
                self.current = rng.range_inclusive(0, self.max_position);
                self.target = rng.range_inclusive(0, self.max_position);
                if self.current == self.target {
                    self.target = (self.target + 1) % self.max_position;
                }
            }
            Some(v) => {
                let obj = state::object(ID, v, &["current", "target"])?;
                let get = |key: &str| -> Result<i64, EnvError> {
                    let x = obj.get(key).ok_or_else(|| {
                        EnvError::InvalidState(format!("{ID} state needs {key:?}"))
                    })?;
                    match x.as_i64() {
                        Some(p) if (0..=self.max_position).contains(&p) => Ok(p),
                        _ => Err(EnvError::InvalidState(format!(
                            "{ID} state {key:?} = {x} is outside 0..={}",
                            self.max_position
                        ))),
                    }
                };
                let (current, target) = (get("current")?, get("target")?);
                // gym_cards' reset never starts at the target (it moves the
                // target instead), so such a state is not a game it plays.
                if current == target {
                    return Err(EnvError::InvalidState(format!(
                        "{ID} state has current == target == {current} (an episode must start away from its target)"
                    )));
                }
                self.current = current;
                self.target = target;
            }
        }
        self.steps = 0;
        Ok(())
    }
    fn step(&mut self, action: i64, _rng: &mut Rng) -> Result<Transition, EnvError> {
        self.steps += 1;
        let before = self.distance();
        if action == 0 && self.current > 0 {
            self.current -= 1;
        } else if action == 1 && self.current < self.max_position {
            self.current += 1;
        }
        let after = self.distance();
        if after == 0 {
            return Ok(Transition {
                reward: 1.0,
                terminated: true,
                truncated: false,
            });
        }
        let reward = if after >= before { -1.0 } else { 0.0 };
        Ok(Transition {
            reward,
            terminated: false,
            truncated: self.steps >= 2 * self.max_position,
        })
    }
    fn info(&self) -> Info {
        let v = json!({"Target": self.target, "Current": self.current});
        v.as_object().cloned().unwrap_or_default()
    }
    fn text(&self) -> String {
        format!(
            "Target number: {}. Current number: {}.",
            self.target, self.current
        )
    }
    fn expert_action(&self) -> i64 {
        // Toward the target; at the target either action ends nothing, pick "+".
        if self.current > self.target {
            0
        } else {
            1
        }
    }
    fn render(&mut self, canvas: &mut Canvas<'_>, full: bool) {
        if full {
            canvas.fill(WHITE);
        }
        self.target_field
            .show(canvas, &format!("Target: {}", self.target), full);
        self.current_field
            .show(canvas, &format!("Current: {}", self.current), full);
    }
}
