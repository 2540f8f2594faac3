//! The rollout's trajectory buffer: T steps x N envs of actions, rewards,
//! flags, values, log-probs and the generated token ids of every step, in
//! flat step-major arrays that the binding exposes to numpy without copies.
//! Every array is allocated once, so its address never changes.

use thiserror::Error;

use crate::gae::{gae, GaeInputs, GaeShapeError};

/// Bad input to the buffer.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum BufferError {
    #[error("the buffer is full ({0} steps); call reset() before adding more")]
    Full(usize),
    #[error("{what}: expected {expected} values (one per env), got {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("env {index}: {len} generated tokens exceed max_tokens = {max}")]
    TooManyTokens {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("step {step} is outside 0..{num_steps}")]
    Step { step: usize, num_steps: usize },
    #[error("{0}")]
    Argument(String),
    #[error(transparent)]
    Gae(#[from] GaeShapeError),
}

/// One step of all envs, as `add` takes it.
pub struct StepRecord<'a> {
    pub actions: &'a [i64],
    pub rewards: &'a [f32],
    pub terminated: &'a [bool],
    pub truncated: &'a [bool],
    pub values: &'a [f32],
    pub logprobs: &'a [f32],
}

/// T x N trajectory storage; token ids are padded to `max_tokens` with `pad_id`.
pub struct TrajectoryBuffer {
    pub num_steps: usize,
    pub num_envs: usize,
    pub max_tokens: usize,
    pub pad_id: i64,
    /// Steps added since the last reset.
    pub len: usize,
    pub actions: Vec<i64>,
    pub rewards: Vec<f32>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    pub values: Vec<f32>,
    /// Value of each step's true successor (filled by the caller for GAE).
    pub next_values: Vec<f32>,
    pub logprobs: Vec<f32>,
    /// [T, N, max_tokens]
    pub token_ids: Vec<i64>,
    /// [T, N]: how many of `token_ids[t, i]` are real tokens.
    pub token_lengths: Vec<i64>,
    pub advantages: Vec<f32>,
    pub returns: Vec<f32>,
}

impl TrajectoryBuffer {
    /// An empty buffer for `num_steps` x `num_envs` with room for
    /// `max_tokens` generated tokens per step and env.
    pub fn new(
        num_steps: usize,
        num_envs: usize,
        max_tokens: usize,
        pad_id: i64,
    ) -> Result<Self, BufferError> {
        if num_steps == 0 || num_envs == 0 {
            return Err(BufferError::Argument(format!(
                "num_steps and num_envs must be positive, got {num_steps} and {num_envs}"
            )));
        }
        let tn = num_steps * num_envs;
        Ok(TrajectoryBuffer {
            num_steps,
            num_envs,
            max_tokens,
            pad_id,
            len: 0,
            actions: vec![0; tn],
            rewards: vec![0.0; tn],
            terminated: vec![false; tn],
            truncated: vec![false; tn],
            values: vec![0.0; tn],
            next_values: vec![0.0; tn],
            logprobs: vec![0.0; tn],
            token_ids: vec![pad_id; tn * max_tokens],
            token_lengths: vec![0; tn],
            advantages: vec![0.0; tn],
            returns: vec![0.0; tn],
        })
    }

    /// Forgets the stored steps (the memory is reused).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    fn check<T>(&self, what: &'static str, xs: &[T]) -> Result<(), BufferError> {
        if xs.len() != self.num_envs {
            return Err(BufferError::Shape {
                what,
                expected: self.num_envs,
                got: xs.len(),
            });
        }
        Ok(())
    }

    /// Appends one step; `tokens[i]` are env i's generated token ids (may be
    /// empty when the caller stores no tokens). Returns the step index.
    pub fn add(
        &mut self,
        rec: &StepRecord<'_>,
        tokens: Option<&[Vec<i64>]>,
    ) -> Result<usize, BufferError> {
        if self.len == self.num_steps {
            return Err(BufferError::Full(self.num_steps));
        }
        self.check("actions", rec.actions)?;
        self.check("rewards", rec.rewards)?;
        self.check("terminated", rec.terminated)?;
        self.check("truncated", rec.truncated)?;
        self.check("values", rec.values)?;
        self.check("logprobs", rec.logprobs)?;
        if let Some(tok) = tokens {
            self.check("token_ids", tok)?;
            if let Some((index, t)) = tok
                .iter()
                .enumerate()
                .find(|(_, t)| t.len() > self.max_tokens)
            {
                return Err(BufferError::TooManyTokens {
                    index,
                    len: t.len(),
                    max: self.max_tokens,
                });
            }
        }
        let t = self.len;
        let row = t * self.num_envs..(t + 1) * self.num_envs;
        self.actions[row.clone()].copy_from_slice(rec.actions);
        self.rewards[row.clone()].copy_from_slice(rec.rewards);
        self.terminated[row.clone()].copy_from_slice(rec.terminated);
        self.truncated[row.clone()].copy_from_slice(rec.truncated);
        self.values[row.clone()].copy_from_slice(rec.values);
        self.logprobs[row.clone()].copy_from_slice(rec.logprobs);
        for i in 0..self.num_envs {
            let k = t * self.num_envs + i;
            let dst = &mut self.token_ids[k * self.max_tokens..(k + 1) * self.max_tokens];
            let src: &[i64] = tokens.map(|tok| &tok[i][..]).unwrap_or(&[]);
            dst[..src.len()].copy_from_slice(src);
            dst[src.len()..].fill(self.pad_id);
            self.token_lengths[k] = src.len() as i64;
        }
        self.len += 1;
        Ok(t)
    }

    /// The generated tokens of env `index` at `step` (without padding).
    pub fn tokens(&self, step: usize, index: usize) -> Result<&[i64], BufferError> {
        if step >= self.num_steps {
            return Err(BufferError::Step {
                step,
                num_steps: self.num_steps,
            });
        }
        if index >= self.num_envs {
            return Err(BufferError::Argument(format!(
                "env index {index} outside 0..{}",
                self.num_envs
            )));
        }
        let k = step * self.num_envs + index;
        let start = k * self.max_tokens;
        Ok(&self.token_ids[start..start + self.token_lengths[k] as usize])
    }

    /// GAE over the stored arrays (all T steps) into `advantages` / `returns`.
    pub fn compute_gae(&mut self, gamma: f64, lam: f64) -> Result<(), BufferError> {
        let x = GaeInputs {
            rewards: &self.rewards,
            values: &self.values,
            next_values: &self.next_values,
            terminated: &self.terminated,
            truncated: &self.truncated,
        };
        gae(
            &x,
            self.num_envs,
            gamma,
            lam,
            &mut self.advantages,
            &mut self.returns,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_pads_tokens_and_refuses_overflow() {
        let mut b = TrajectoryBuffer::new(2, 2, 3, -1).unwrap();
        let rec = StepRecord {
            actions: &[1, 2],
            rewards: &[0.5, 1.0],
            terminated: &[false, true],
            truncated: &[false, false],
            values: &[0.1, 0.2],
            logprobs: &[-1.0, -2.0],
        };
        b.add(&rec, Some(&[vec![7, 8], vec![]])).unwrap();
        assert_eq!(&b.token_ids[..6], &[7, 8, -1, -1, -1, -1]);
        assert_eq!(b.tokens(0, 0).unwrap(), &[7, 8]);
        let err = b.add(&rec, Some(&[vec![1], vec![1, 2, 3, 4]])).unwrap_err();
        assert_eq!(
            err,
            BufferError::TooManyTokens {
                index: 1,
                len: 4,
                max: 3
            }
        );
        b.add(&rec, None).unwrap();
        assert!(matches!(b.add(&rec, None), Err(BufferError::Full(2))));
        b.reset();
        assert_eq!(b.len, 0);
    }
}
