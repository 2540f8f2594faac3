//! ALFWorld-v0: ALFWorld-style household tasks (the paper's embodied
//! benchmark), generated from a seed and played through ALFWorld's command
//! grammar, with a 300x300 image of the agent's current view.
//!
//! The action is the index of a command in the current admissible list
//! (info["admissible_commands"]); -1 stands for an answer that named no
//! admissible command: "Nothing happens.", state unchanged, reward - 1.
//! Reward per step: 50 * won + goal-condition success rate (- 1 if -1).
//! info: won, goal_condition_success_rate, task, task_type, location (the
//! receptacle the agent is at, or "the middle of the room") and holding (the held
//! object's name, or "nothing"): the image's two status lines.

pub mod catalog;
pub mod command;
pub mod expert;
pub mod game;
pub mod image;
pub mod task;
pub mod world;

use serde_json::{json, Value};
use vlmrl_core::env::{Env, Info, Transition};
use vlmrl_core::error::EnvError;
use vlmrl_core::render::Canvas;
use vlmrl_core::rng::Rng;

use crate::{kwargs, state, Kwargs};
use game::Game;
use task::{TaskType, TASK_TYPES};
use world::Dice;

const ID: &str = "ALFWorld-v0";
/// info["location"] while the agent stands in the middle of the room.
pub const MIDDLE: &str = "the middle of the room";
/// info["holding"] while the agent holds nothing.
pub const NOTHING: &str = "nothing";

impl Dice for Rng {
    fn below(&mut self, n: usize) -> usize {
        Rng::below(self, n as u64) as usize
    }
}

/// The ALFWorld-v0 environment.
pub struct AlfWorld {
    max_steps: u32,
    /// Task types drawn from at reset (uniformly).
    task_types: Vec<TaskType>,
    game: Option<Game>,
    view: image::View,
}

/// Parses a list of ALFWorld task type names.
fn parse_task_types(v: &Value, what: &str) -> Result<Vec<TaskType>, EnvError> {
    let names: Vec<&str> = TASK_TYPES.iter().map(|t| t.name()).collect();
    let one = |x: &Value| -> Option<TaskType> { x.as_str().and_then(TaskType::from_name) };
    let list: Option<Vec<TaskType>> = match v {
        Value::String(_) => one(v).map(|t| vec![t]),
        Value::Array(a) if !a.is_empty() => a.iter().map(one).collect(),
        _ => None,
    };
    list.ok_or_else(|| {
        EnvError::InvalidArgument(format!(
            "{ID}: {what} must name task types among {}, got {v}",
            names.join(", ")
        ))
    })
}

/// Registry constructor. kwargs: max_steps (50), task_types (all six; a
/// name or a list of ALFWorld's names, e.g. "pick_heat_then_place_in_recep").
pub fn make(kw: &Kwargs) -> Result<Box<dyn Env>, EnvError> {
    kwargs::check_known(ID, kw, &["max_steps", "task_types"])?;
    let max_steps = kwargs::int(ID, kw, "max_steps", 50, 1, 100_000)? as u32;
    let task_types = match kw.get("task_types") {
        None | Some(Value::Null) => TASK_TYPES.to_vec(),
        Some(v) => parse_task_types(v, "task_types")?,
    };
    // A placeholder episode until the first reset, so that the action list
    // is never empty (gymnasium sizes a Discrete space from it).
    let game = Game::new(&mut Rng::new(0), Some(task_types[0]), max_steps);
    Ok(Box::new(AlfWorld {
        max_steps,
        task_types,
        game: Some(game),
        view: image::View::default(),
    }))
}

impl AlfWorld {
    fn game(&self) -> &Game {
        self.game.as_ref().expect("the engine resets before use")
    }
}

impl Env for AlfWorld {
    fn id(&self) -> &str {
        ID
    }

    fn action_names(&self) -> Vec<String> {
        self.game.as_ref().map_or_else(Vec::new, |g| {
            g.admissible.iter().map(|c| c.0.clone()).collect()
        })
    }

    fn num_actions(&self) -> usize {
        self.game.as_ref().map_or(0, |g| g.admissible.len())
    }

    fn dynamic_actions(&self) -> bool {
        true
    }

    fn accepts_action(&self, action: i64) -> bool {
        action == -1 || (action >= 0 && (action as u64) < self.num_actions() as u64)
    }

    /// State (all keys optional): {"task_type": name, "seed": int}. With a
    /// seed the household is generated from that seed alone, so a fixed list
    /// of seeds is a fixed evaluation set.
    fn reset(&mut self, rng: &mut Rng, st: Option<&Value>) -> Result<(), EnvError> {
        let mut ttype = self.task_types[rng.below(self.task_types.len() as u64) as usize];
        let mut seed = None;
        if let Some(s) = st {
            let obj = state::object(ID, s, &["task_type", "seed"])?;
            if let Some(t) = obj.get("task_type") {
                ttype = parse_task_types(t, "state \"task_type\"")
                    .ok()
                    .filter(|v| v.len() == 1)
                    .ok_or_else(|| {
                        EnvError::InvalidState(format!("{ID}: unknown task_type {t}"))
                    })?[0];
            }
            if let Some(v) = obj.get("seed") {
                seed = Some(v.as_u64().ok_or_else(|| {
                    EnvError::InvalidState(format!(
                        "{ID}: state \"seed\" must be a non-negative integer, got {v}"
                    ))
                })?);
            }
        }
        let game = match seed {
            Some(s) => Game::new(&mut Rng::new(s), Some(ttype), self.max_steps),
            None => Game::new(rng, Some(ttype), self.max_steps),
        };
        self.game = Some(game);
        Ok(())
    }

    fn step(&mut self, action: i64, _rng: &mut Rng) -> Result<Transition, EnvError> {
        let n = self.num_actions();
        let game = self.game.as_mut().ok_or(EnvError::ResetNeeded)?;
        if !(action == -1 || (action >= 0 && (action as u64) < n as u64)) {
            return Err(EnvError::InvalidAction {
                value: action,
                num_actions: n,
            });
        }
        let r = game.step(action);
        Ok(Transition {
            reward: r.reward,
            terminated: r.terminated,
            truncated: r.truncated,
        })
    }

    fn info(&self) -> Info {
        let Some(g) = &self.game else {
            return Info::new();
        };
        let mut info = Info::new();
        info.insert("won".into(), json!(g.won));
        info.insert(
            "goal_condition_success_rate".into(),
            json!(g.goal_condition_success_rate),
        );
        info.insert("task".into(), json!(g.world.task.description()));
        info.insert("task_type".into(), json!(g.world.task.ttype.name()));
        // What the image's status lines show: "At: ..." and "Holding: ..." (names only).
        let w = &g.world;
        let location = w.agent_at.map_or(MIDDLE, |r| w.receps[r].name.as_str());
        info.insert("location".into(), json!(location));
        let holding = w.held.map_or(NOTHING, |h| w.objects[h].name.as_str());
        info.insert("holding".into(), json!(holding));
        info
    }

    fn text(&self) -> String {
        self.game
            .as_ref()
            .map_or_else(String::new, |g| g.feedback.clone())
    }

    fn expert_action(&self) -> i64 {
        self.game().expert_action()
    }

    fn render(&mut self, canvas: &mut Canvas<'_>, full: bool) {
        if let Some(g) = &self.game {
            self.view.render(canvas, g, full);
        } else {
            canvas.fill(vlmrl_core::render::WHITE);
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_env;
