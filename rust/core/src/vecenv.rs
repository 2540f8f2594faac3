//! The vector env: N boxed envs stepped together in a rayon thread pool,
//! writing into one Rust-owned observation buffer [N, 300, 300, 3] that the
//! binding exposes to numpy without copies.
//!
//! It knows nothing about any game: it validates actions through
//! [`Env::accepts_action`], seeds one [`Rng`] per env, auto-resets finished
//! episodes (gymnasium's NEXT_STEP / SAME_STEP / DISABLED modes), catches
//! panics at the thread boundary, and adds the generic info keys.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rayon::prelude::*;
use serde_json::Value;

use crate::env::{Env, Info, OBS_BYTES};
use crate::error::{panic_message, EngineError, EnvError, VecEnvError};
use crate::render::Canvas;
use crate::rng::{env_seed, Rng};

/// When finished episodes restart (gymnasium's `AutoresetMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoReset {
    /// The step after the last one resets the env and ignores its action.
    NextStep,
    /// The last step resets at once; the final observation and info are kept
    /// aside ([`VecEnv::final_obs`], [`VecEnv::final_info`]).
    SameStep,
    /// No auto-reset: finished envs are reset explicitly (reset with a mask).
    Disabled,
}

impl AutoReset {
    /// Parses gymnasium's names ("next_step", "same_step", "disabled"), any case.
    pub fn parse(s: &str) -> Result<AutoReset, EngineError> {
        match s.to_ascii_lowercase().as_str() {
            "next_step" | "nextstep" => Ok(AutoReset::NextStep),
            "same_step" | "samestep" => Ok(AutoReset::SameStep),
            "disabled" => Ok(AutoReset::Disabled),
            _ => Err(EngineError::Argument(format!(
                "unknown autoreset_mode {s:?}: expected \"next_step\", \"same_step\" or \"disabled\""
            ))),
        }
    }
}

/// The info key holding the one-line description of the observation.
pub const TEXT_KEY: &str = "text";
/// The info key listing the current action names of dynamic-action envs.
pub const ADMISSIBLE_KEY: &str = "admissible_commands";

struct Slot {
    env: Box<dyn Env>,
    rng: Rng,
    /// Never reset, or broken by a panic: step() is refused.
    needs_reset: bool,
    /// The last step ended the episode (NEXT_STEP resets on the next step).
    done: bool,
    /// The canvas holds this env's last drawing (incremental redraw allowed).
    drawn: bool,
    reward: f64,
    terminated: bool,
    truncated: bool,
    info: Info,
    /// SAME_STEP only: the episode ended this step; its last frame and info.
    ended: bool,
    final_obs: Vec<u8>,
    final_info: Info,
    /// The last expert action computed for this env.
    expert: i64,
}

impl Slot {
    fn full_info(&self) -> Info {
        let mut info = self.env.info();
        info.insert(TEXT_KEY.into(), Value::String(self.env.text()));
        if self.env.dynamic_actions() && !info.contains_key(ADMISSIBLE_KEY) {
            let names = self
                .env
                .action_names()
                .into_iter()
                .map(Value::String)
                .collect();
            info.insert(ADMISSIBLE_KEY.into(), Value::Array(names));
        }
        info
    }

    fn draw(&mut self, obs: &mut [u8]) {
        let mut canvas = Canvas::new(obs);
        self.env.render(&mut canvas, !self.drawn);
        self.drawn = true;
    }

    fn reset(&mut self, state: Option<&Value>, obs: &mut [u8]) -> Result<(), EnvError> {
        self.needs_reset = true;
        self.env.reset(&mut self.rng, state)?;
        self.needs_reset = false;
        self.done = false;
        self.ended = false;
        self.reward = 0.0;
        self.terminated = false;
        self.truncated = false;
        self.draw(obs);
        self.info = self.full_info();
        Ok(())
    }

    fn step(&mut self, action: i64, mode: AutoReset, obs: &mut [u8]) -> Result<(), EnvError> {
        self.ended = false;
        if mode == AutoReset::NextStep && self.done {
            return self.reset(None, obs);
        }
        let t = self.env.step(action, &mut self.rng)?;
        self.reward = t.reward;
        self.terminated = t.terminated;
        self.truncated = t.truncated;
        self.done = t.done();
        self.draw(obs);
        self.info = self.full_info();
        if mode == AutoReset::SameStep && self.done {
            self.final_obs.resize(OBS_BYTES, 0);
            self.final_obs.copy_from_slice(obs);
            self.final_info = std::mem::take(&mut self.info);
            let (reward, terminated, truncated) = (self.reward, self.terminated, self.truncated);
            self.reset(None, obs)?;
            (self.reward, self.terminated, self.truncated) = (reward, terminated, truncated);
            self.ended = true;
        }
        Ok(())
    }

    /// Runs `f`, turning a panic into [`EnvError::Panic`] and marking the
    /// env as needing a reset (its state is unknown after a panic).
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Slot) -> Result<(), EnvError>,
    ) -> Result<(), EnvError> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(r) => r,
            Err(payload) => {
                self.needs_reset = true;
                self.drawn = false;
                Err(EnvError::Panic(panic_message(payload.as_ref())))
            }
        }
    }
}

/// N environments stepped together. See the module docs.
pub struct VecEnv {
    slots: Vec<Slot>,
    obs: Vec<u8>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    mode: AutoReset,
    pool: Option<rayon::ThreadPool>,
}

fn first_error(results: Vec<Result<(), EnvError>>) -> Result<(), EngineError> {
    match results
        .into_iter()
        .enumerate()
        .find_map(|(index, r)| r.err().map(|source| (index, source)))
    {
        Some((index, source)) => Err(EngineError::Env(VecEnvError { index, source })),
        None => Ok(()),
    }
}

impl VecEnv {
    /// A vector env over `envs`, stepping in `num_threads` threads (1 = the
    /// calling thread only), with per-env streams derived from `seed`.
    pub fn new(
        envs: Vec<Box<dyn Env>>,
        num_threads: usize,
        mode: AutoReset,
        seed: u64,
    ) -> Result<VecEnv, EngineError> {
        if envs.is_empty() {
            return Err(EngineError::Argument("num_envs must be at least 1".into()));
        }
        if num_threads == 0 {
            return Err(EngineError::Argument(
                "num_threads must be at least 1".into(),
            ));
        }
        let n = envs.len();
        let pool = if num_threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(num_threads)
                .thread_name(|i| format!("vlmrl-env-{i}"))
                .build()
                .map_err(|e| {
                    EngineError::Argument(format!("cannot start {num_threads} threads: {e}"))
                })?;
            Some(pool)
        } else {
            None
        };
        let slots = envs
            .into_iter()
            .enumerate()
            .map(|(i, env)| Slot {
                env,
                rng: Rng::new(env_seed(seed, i)),
                needs_reset: true,
                done: false,
                drawn: false,
                reward: 0.0,
                terminated: false,
                truncated: false,
                info: Info::new(),
                ended: false,
                final_obs: Vec::new(),
                final_info: Info::new(),
                expert: 0,
            })
            .collect();
        Ok(VecEnv {
            slots,
            obs: vec![0; n * OBS_BYTES],
            rewards: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            mode,
            pool,
        })
    }

    pub fn num_envs(&self) -> usize {
        self.slots.len()
    }
    pub fn autoreset_mode(&self) -> AutoReset {
        self.mode
    }
    /// Env `i` (for its id and action names).
    pub fn env(&self, i: usize) -> &dyn Env {
        self.slots[i].env.as_ref()
    }
    /// Observations [N, 300, 300, 3], row-major RGB. Its address never changes.
    pub fn obs(&self) -> &[u8] {
        &self.obs
    }
    /// Rewards of the last step.
    pub fn rewards(&self) -> &[f64] {
        &self.rewards
    }
    pub fn terminated(&self) -> &[bool] {
        &self.terminated
    }
    pub fn truncated(&self) -> &[bool] {
        &self.truncated
    }
    /// Info of env `i` after the last reset or step (with "text").
    pub fn info(&self, i: usize) -> &Info {
        &self.slots[i].info
    }
    /// SAME_STEP: the last frame of env `i` if its episode ended in the last step.
    pub fn final_obs(&self, i: usize) -> Option<&[u8]> {
        let s = &self.slots[i];
        s.ended.then_some(&s.final_obs[..])
    }
    /// SAME_STEP: the last info of env `i` if its episode ended in the last step.
    pub fn final_info(&self, i: usize) -> Option<&Info> {
        let s = &self.slots[i];
        s.ended.then_some(&s.final_info)
    }
    /// The expert policy's action for every env (computed in the pool:
    /// experts may search). A panicking expert yields an error naming the env.
    pub fn expert_actions(&mut self) -> Result<Vec<i64>, EngineError> {
        let mut out = vec![0i64; self.num_envs()];
        let results = self.run(|_, slot, _| {
            slot.expert = slot.env.expert_action();
            Ok(())
        });
        first_error(results)?;
        for (o, s) in out.iter_mut().zip(&self.slots) {
            *o = s.expert;
        }
        Ok(out)
    }

    /// The expert's plan of every env (see `Env::expert_plan`), computed in
    /// the pool. A panicking expert yields an error naming the env.
    pub fn expert_plans(&mut self) -> Result<Vec<Option<String>>, EngineError> {
        let plans: Vec<std::sync::Mutex<Option<String>>> = (0..self.num_envs())
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        let results = self.run(|i, slot, _| {
            let plan = slot.env.expert_plan();
            *plans[i].lock().unwrap_or_else(|e| e.into_inner()) = plan;
            Ok(())
        });
        first_error(results)?;
        Ok(plans
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect())
    }

    fn run<F>(&mut self, f: F) -> Vec<Result<(), EnvError>>
    where
        F: Fn(usize, &mut Slot, &mut [u8]) -> Result<(), EnvError> + Sync + Send,
    {
        let slots = &mut self.slots;
        let obs = &mut self.obs;
        let task = |(i, (slot, o)): (usize, (&mut Slot, &mut [u8]))| slot.guarded(|s| f(i, s, o));
        match &self.pool {
            Some(pool) => pool.install(|| {
                slots
                    .par_iter_mut()
                    .zip(obs.par_chunks_mut(OBS_BYTES))
                    .enumerate()
                    .map(task)
                    .collect()
            }),
            None => slots
                .iter_mut()
                .zip(obs.chunks_mut(OBS_BYTES))
                .enumerate()
                .map(task)
                .collect(),
        }
    }

    fn publish(&mut self) {
        for (i, s) in self.slots.iter().enumerate() {
            self.rewards[i] = s.reward;
            self.terminated[i] = s.terminated;
            self.truncated[i] = s.truncated;
        }
    }

    /// Resets the envs selected by `mask` (all when None), reseeding every
    /// env's stream from `seed` when given, loading `states[i]` where it is
    /// Some. On an error (which names the env) the other envs are reset.
    pub fn reset(
        &mut self,
        seed: Option<u64>,
        states: Option<&[Option<Value>]>,
        mask: Option<&[bool]>,
    ) -> Result<(), EngineError> {
        let n = self.num_envs();
        if let Some(st) = states {
            if st.len() != n {
                return Err(EngineError::Shape {
                    what: "states",
                    expected: n,
                    got: st.len(),
                });
            }
        }
        if let Some(m) = mask {
            if m.len() != n {
                return Err(EngineError::Shape {
                    what: "reset_mask",
                    expected: n,
                    got: m.len(),
                });
            }
        }
        if let Some(seed) = seed {
            self.reseed_groups(seed, 1);
        }
        let results = self.run(|i, slot, obs| {
            if mask.is_some_and(|m| !m[i]) {
                return Ok(());
            }
            slot.reset(states.and_then(|st| st[i].as_ref()), obs)
        });
        self.publish();
        first_error(results)
    }

    /// Reseeds every env's stream from `seed`, the envs of each group of
    /// `group_size` consecutive envs sharing ONE stream (`env_seed(seed, i /
    /// group_size)`): a reset then starts them from the same state, and so
    /// does every later auto-reset of games whose steps draw nothing.
    pub fn reseed_groups(&mut self, seed: u64, group_size: usize) {
        let g = group_size.max(1);
        for (i, s) in self.slots.iter_mut().enumerate() {
            s.rng = Rng::new(env_seed(seed, i / g));
        }
    }

    /// Steps every env with its action (see [`AutoReset`] for finished
    /// envs). All actions are checked before any env moves, so a bad action
    /// leaves every env as it was.
    pub fn step(&mut self, actions: &[i64]) -> Result<(), EngineError> {
        let n = self.num_envs();
        if actions.len() != n {
            return Err(EngineError::Shape {
                what: "actions",
                expected: n,
                got: actions.len(),
            });
        }
        let mode = self.mode;
        for (index, (s, &a)) in self.slots.iter().zip(actions).enumerate() {
            let source = if s.needs_reset {
                EnvError::ResetNeeded
            } else if mode == AutoReset::NextStep && s.done {
                continue; // the action is ignored: this step resets the env
            } else if !s.env.accepts_action(a) {
                EnvError::InvalidAction {
                    value: a,
                    num_actions: s.env.num_actions(),
                }
            } else {
                continue;
            };
            return Err(EngineError::Env(VecEnvError { index, source }));
        }
        let results = self.run(|i, slot, obs| slot.step(actions[i], mode, obs));
        self.publish();
        first_error(results)
    }
}
