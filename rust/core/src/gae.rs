//! Generalized advantage estimation on the CPU (the Triton kernel of the
//! kernels issue computes the same thing on the GPU).
//!
//! Inputs are [T, N] row-major (step-major). `next_values[t]` is the value of
//! the true successor of step t (the final state for a truncated step):
//!   delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
//!   A_t     = delta_t + gamma * lam * (1 - (terminated_t or truncated_t)) * A_{t+1},  A_T = 0
//!   returns = A + values
//! Accumulation is in f64 whatever the storage type.

use thiserror::Error;

/// A storage float (f32 or f64).
pub trait Float: Copy + Send + Sync {
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
}
impl Float for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}
impl Float for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// Inputs of the wrong size.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("gae: {name} has {got} elements, expected T*N = {expected}")]
pub struct GaeShapeError {
    pub name: &'static str,
    pub got: usize,
    pub expected: usize,
}

/// The [T, N] inputs of [`gae`].
pub struct GaeInputs<'a, F: Float> {
    pub rewards: &'a [F],
    pub values: &'a [F],
    pub next_values: &'a [F],
    pub terminated: &'a [bool],
    pub truncated: &'a [bool],
}

/// Writes advantages and returns ([T, N] each) for `num_envs` envs.
pub fn gae<F: Float>(
    x: &GaeInputs<'_, F>,
    num_envs: usize,
    gamma: f64,
    lam: f64,
    advantages: &mut [F],
    returns: &mut [F],
) -> Result<(), GaeShapeError> {
    let expected = x.rewards.len();
    let sizes = [
        ("values", x.values.len()),
        ("next_values", x.next_values.len()),
        ("terminated", x.terminated.len()),
        ("truncated", x.truncated.len()),
        ("advantages", advantages.len()),
        ("returns", returns.len()),
    ];
    if let Some(&(name, got)) = sizes.iter().find(|(_, len)| *len != expected) {
        return Err(GaeShapeError {
            name,
            got,
            expected,
        });
    }
    if expected == 0 {
        return Ok(()); // an empty rollout (T = 0 or N = 0) has no advantages
    }
    if num_envs == 0 || !expected.is_multiple_of(num_envs) {
        return Err(GaeShapeError {
            name: "rewards",
            got: expected,
            expected: num_envs * (expected / num_envs.max(1)),
        });
    }
    let steps = expected / num_envs;
    let mut next_adv = vec![0f64; num_envs];
    for t in (0..steps).rev() {
        for (i, carry) in next_adv.iter_mut().enumerate() {
            let k = t * num_envs + i;
            let nonterminal = if x.terminated[k] { 0.0 } else { 1.0 };
            let cont = if x.terminated[k] || x.truncated[k] {
                0.0
            } else {
                1.0
            };
            let v = x.values[k].to_f64();
            let delta = x.rewards[k].to_f64() + gamma * nonterminal * x.next_values[k].to_f64() - v;
            let a = delta + gamma * lam * cont * *carry;
            *carry = a;
            advantages[k] = F::from_f64(a);
            returns[k] = F::from_f64(a + v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_env_by_hand() {
        // T = 3, N = 1; episode ends (terminated) at t = 1, new one runs at t = 2.
        let x = GaeInputs {
            rewards: &[1.0f64, 2.0, 3.0],
            values: &[0.5, 0.25, 1.0],
            next_values: &[0.25, 9.0, 2.0],
            terminated: &[false, true, false],
            truncated: &[false, false, false],
        };
        let (g, l) = (0.9, 0.95);
        let (mut adv, mut ret) = (vec![0.0; 3], vec![0.0; 3]);
        gae(&x, 1, g, l, &mut adv, &mut ret).unwrap();
        let a2 = 3.0 + g * 2.0 - 1.0;
        let a1 = 2.0 - 0.25;
        let a0 = 1.0 + g * 0.25 - 0.5 + g * l * a1;
        for (got, want) in adv.iter().zip([a0, a1, a2]) {
            assert!((got - want).abs() < 1e-12, "{adv:?}");
        }
        assert!((ret[0] - (a0 + 0.5)).abs() < 1e-12);
        let mut short = vec![0.0; 2];
        assert!(gae(&x, 1, g, l, &mut short, &mut ret).is_err());
        let empty = GaeInputs::<f64> {
            rewards: &[],
            values: &[],
            next_values: &[],
            terminated: &[],
            truncated: &[],
        };
        assert!(gae(&empty, 0, g, l, &mut [], &mut []).is_ok());
    }
}
