//! Binding of the vector env (`vlmrl_core::vecenv`) and the env registry
//! (`vlmrl_envs`). Observations, rewards and flags are numpy views over the
//! Rust-owned buffers (no copies); stepping runs with the GIL released.

use std::sync::{Mutex, MutexGuard};

use numpy::ndarray::{ArrayView1, ArrayView4};
use numpy::{PyArray1, PyArray4, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyDict;
use serde_json::Value;
use vlmrl_core::env::{Info, OBS_H, OBS_W};
use vlmrl_core::vecenv::{AutoReset, VecEnv as CoreVecEnv};

use crate::errors::{from_engine, from_env, EnvPanicError};
use crate::json::{kwargs_to_json, to_dict, to_json, to_py};

/// N environments of one id, stepped together in Rust threads.
///
/// Low-level: `vlmrl_fast.make_vec` wraps it in a gymnasium VectorEnv.
#[pyclass(module = "vlmrl_fast._core")]
pub struct VecEnv {
    inner: Mutex<CoreVecEnv>,
    env_id: String,
    num_envs: usize,
}

impl VecEnv {
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, CoreVecEnv>> {
        // Waiting for the lock detaches from Python, so two Python threads
        // using one env cannot deadlock on the GIL. A poisoned lock means a
        // panic escaped an earlier call; the engine state is still consistent
        // (panics are caught per env), so go on.
        Ok(self
            .inner
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner()))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Float,
    Bool,
    Object,
}

fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_i64() => Kind::Int,
        Value::Number(_) => Kind::Float,
        _ => Kind::Object,
    }
}

/// Gymnasium's vector info: for every key, an array over envs (int64,
/// float64, bool, or object with None for missing) and a "_key" mask.
fn vector_info<'py>(
    py: Python<'py>,
    n: usize,
    infos: &[(usize, &Info)],
) -> PyResult<Bound<'py, PyDict>> {
    let mut keys: Vec<(&str, Kind)> = Vec::new();
    for (_, info) in infos {
        for (k, v) in info.iter() {
            match keys.iter_mut().find(|(key, _)| key == k) {
                Some((_, kind)) if *kind != kind_of(v) => *kind = Kind::Object,
                Some(_) => {}
                None => keys.push((k, kind_of(v))),
            }
        }
    }
    let out = PyDict::new(py);
    for (key, kind) in keys {
        let mut mask = vec![false; n];
        for (i, info) in infos {
            mask[*i] = info.contains_key(key);
        }
        let column = |f: &mut dyn FnMut(usize, &Value)| {
            for (i, info) in infos {
                if let Some(v) = info.get(key) {
                    f(*i, v);
                }
            }
        };
        let array = match kind {
            Kind::Int => {
                let mut a = vec![0i64; n];
                column(&mut |i, v| a[i] = v.as_i64().unwrap_or(0));
                PyArray1::from_vec(py, a).into_any()
            }
            Kind::Float => {
                let mut a = vec![0f64; n];
                column(&mut |i, v| a[i] = v.as_f64().unwrap_or(f64::NAN));
                PyArray1::from_vec(py, a).into_any()
            }
            Kind::Bool => {
                let mut a = vec![false; n];
                column(&mut |i, v| a[i] = v.as_bool().unwrap_or(false));
                PyArray1::from_vec(py, a).into_any()
            }
            Kind::Object => {
                let mut a: Vec<Py<PyAny>> = (0..n).map(|_| py.None()).collect();
                let mut err = None;
                column(&mut |i, v| match to_py(py, v) {
                    Ok(o) => a[i] = o.unbind(),
                    Err(e) => err = Some(e),
                });
                if let Some(e) = err {
                    return Err(e);
                }
                PyArray1::from_vec(py, a).into_any()
            }
        };
        out.set_item(key, array)?;
        out.set_item(format!("_{key}"), PyArray1::from_vec(py, mask))?;
    }
    Ok(out)
}

impl VecEnv {
    /// The vector info after a reset or step, with SAME_STEP's final_obs /
    /// final_info for the envs whose episode ended in that step.
    fn build_info<'py>(&self, py: Python<'py>, inner: &CoreVecEnv) -> PyResult<Bound<'py, PyDict>> {
        let n = self.num_envs;
        let infos: Vec<(usize, &Info)> = (0..n).map(|i| (i, inner.info(i))).collect();
        let out = vector_info(py, n, &infos)?;
        let ended: Vec<usize> = (0..n).filter(|&i| inner.final_obs(i).is_some()).collect();
        if !ended.is_empty() {
            let mut frames: Vec<Py<PyAny>> = (0..n).map(|_| py.None()).collect();
            let mut mask = vec![false; n];
            for &i in &ended {
                let bytes = inner
                    .final_obs(i)
                    .expect("ended env has a final frame")
                    .to_vec();
                let frame = PyArray1::from_vec(py, bytes).reshape([OBS_H, OBS_W, 3])?;
                frames[i] = frame.into_any().unbind();
                mask[i] = true;
            }
            let finals: Vec<(usize, &Info)> = ended
                .iter()
                .map(|&i| (i, inner.final_info(i).expect("ended env has a final info")))
                .collect();
            out.set_item("final_obs", PyArray1::from_vec(py, frames))?;
            out.set_item("_final_obs", PyArray1::from_vec(py, mask.clone()))?;
            out.set_item("final_info", vector_info(py, n, &finals)?)?;
            out.set_item("_final_info", PyArray1::from_vec(py, mask))?;
        }
        Ok(out)
    }
}

#[pymethods]
impl VecEnv {
    /// Builds `num_envs` envs of `env_id` with `kwargs`, stepping in
    /// `num_threads` threads, auto-resetting per `autoreset_mode`
    /// ("next_step", "same_step" or "disabled").
    #[new]
    #[pyo3(signature = (env_id, num_envs, seed, num_threads=1, autoreset_mode="next_step", kwargs=None))]
    fn new(
        env_id: &str,
        num_envs: usize,
        seed: u64,
        num_threads: usize,
        autoreset_mode: &str,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let kw = kwargs_to_json(kwargs)?;
        let mode = AutoReset::parse(autoreset_mode).map_err(from_engine)?;
        let envs = (0..num_envs)
            .map(|_| vlmrl_envs::make(env_id, &kw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(from_env)?;
        let inner = CoreVecEnv::new(envs, num_threads, mode, seed).map_err(from_engine)?;
        Ok(VecEnv {
            inner: Mutex::new(inner),
            env_id: vlmrl_envs::bare_id(env_id).to_string(),
            num_envs,
        })
    }

    /// The env id without namespace, e.g. "Points24-v0".
    #[getter]
    fn env_id(&self) -> &str {
        &self.env_id
    }

    #[getter]
    fn num_envs(&self) -> usize {
        self.num_envs
    }

    /// Whether the action set changes from step to step (ALFWorld).
    #[getter]
    fn dynamic_actions(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.env(0).dynamic_actions())
    }

    /// The current action names of env `index`.
    fn action_names(&self, py: Python<'_>, index: usize) -> PyResult<Vec<String>> {
        let inner = self.lock(py)?;
        self.check_index(index)?;
        Ok(inner.env(index).action_names())
    }

    /// Resets the envs (all, or those where `mask` is True), reseeding from
    /// `seed` when given and loading `states[i]` where it is not None.
    /// Returns the vector info.
    /// With `with_info=False` the (costly) vector info is skipped and None returned.
    /// `group_size` > 1 (with `seed`): each group of that many consecutive envs
    /// shares one random stream, so its envs start from the same state.
    #[pyo3(signature = (seed=None, states=None, mask=None, with_info=true, group_size=1))]
    fn reset<'py>(
        &self,
        py: Python<'py>,
        seed: Option<u64>,
        states: Option<Vec<Bound<'py, PyAny>>>,
        mask: Option<Vec<bool>>,
        with_info: bool,
        group_size: usize,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        if group_size == 0 || self.num_envs % group_size != 0 {
            return Err(crate::errors::EnvArgumentError::new_err(format!(
                "group_size must divide num_envs ({}), got {group_size}",
                self.num_envs
            )));
        }
        let states: Option<Vec<Option<Value>>> = states
            .map(|st| {
                st.iter()
                    .map(|s| {
                        if s.is_none() {
                            Ok(None)
                        } else {
                            to_json(s).map(Some)
                        }
                    })
                    .collect::<PyResult<_>>()
            })
            .transpose()?;
        let mut inner = self.lock(py)?;
        let engine = &mut *inner;
        let seed = match seed {
            Some(s) if group_size > 1 => {
                engine.reseed_groups(s, group_size);
                None
            }
            other => other,
        };
        py.detach(|| engine.reset(seed, states.as_deref(), mask.as_deref()))
            .map_err(from_engine)?;
        with_info.then(|| self.build_info(py, &inner)).transpose()
    }

    /// Steps every env with `actions` (int64, one per env) and returns the
    /// vector info; read obs / rewards / terminated / truncated afterwards.
    /// With `with_info=False` the vector info is skipped and None returned.
    #[pyo3(signature = (actions, with_info=true))]
    fn step<'py>(
        &self,
        py: Python<'py>,
        actions: PyReadonlyArray1<'py, i64>,
        with_info: bool,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let actions = actions
            .as_slice()
            .map_err(|e| EnvPanicError::new_err(format!("actions: {e}")))?
            .to_vec();
        let mut inner = self.lock(py)?;
        let engine = &mut *inner;
        py.detach(|| engine.step(&actions)).map_err(from_engine)?;
        with_info.then(|| self.build_info(py, &inner)).transpose()
    }

    /// The info dict of env `index` (single-env use).
    fn env_info<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyDict>> {
        self.check_index(index)?;
        let inner = self.lock(py)?;
        to_dict(py, inner.info(index))
    }

    /// A hashable key of every env's current state (uint64, equal exactly
    /// when two envs are in the same state; see `Env::state_key`).
    fn state_keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let inner = self.lock(py)?;
        let keys = (0..self.num_envs)
            .map(|i| inner.env(i).state_key())
            .collect();
        Ok(PyArray1::from_vec(py, keys))
    }

    /// The expert's action for every env.
    fn expert_actions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let mut inner = self.lock(py)?;
        let engine = &mut *inner;
        let actions = py.detach(|| engine.expert_actions()).map_err(from_engine)?;
        Ok(PyArray1::from_vec(py, actions))
    }

    /// The expert's plan of every env: the formula games' full solution
    /// extending the current formula ("" when there is none), None for games
    /// without a plan.
    fn expert_plans(&self, py: Python<'_>) -> PyResult<Vec<Option<String>>> {
        let mut inner = self.lock(py)?;
        let engine = &mut *inner;
        py.detach(|| engine.expert_plans()).map_err(from_engine)
    }

    /// Observations [num_envs, 300, 300, 3] uint8: a view of the Rust buffer,
    /// overwritten in place by every reset and step.
    #[getter]
    fn obs<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray4<u8>>> {
        let me = slf.borrow();
        let inner = me.lock(slf.py())?;
        let view = ArrayView4::from_shape((me.num_envs, OBS_H, OBS_W, 3), inner.obs())
            .map_err(|e| EnvPanicError::new_err(e.to_string()))?;
        // SAFETY: the buffer lives as long as `slf` (the container) and is
        // never reallocated; the array only aliases it.
        Ok(unsafe { PyArray4::borrow_from_array(&view, slf.clone().into_any()) })
    }

    /// Rewards of the last step (float64 view).
    #[getter]
    fn rewards<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let me = slf.borrow();
        let inner = me.lock(slf.py())?;
        let view = ArrayView1::from(inner.rewards());
        // SAFETY: as for `obs`.
        Ok(unsafe { PyArray1::borrow_from_array(&view, slf.clone().into_any()) })
    }

    /// Terminated flags of the last step (bool view).
    #[getter]
    fn terminated<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray1<bool>>> {
        let me = slf.borrow();
        let inner = me.lock(slf.py())?;
        let view = ArrayView1::from(inner.terminated());
        // SAFETY: as for `obs`.
        Ok(unsafe { PyArray1::borrow_from_array(&view, slf.clone().into_any()) })
    }

    /// Truncated flags of the last step (bool view).
    #[getter]
    fn truncated<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray1<bool>>> {
        let me = slf.borrow();
        let inner = me.lock(slf.py())?;
        let view = ArrayView1::from(inner.truncated());
        // SAFETY: as for `obs`.
        Ok(unsafe { PyArray1::borrow_from_array(&view, slf.clone().into_any()) })
    }
}

impl VecEnv {
    fn check_index(&self, index: usize) -> PyResult<()> {
        if index >= self.num_envs {
            return Err(crate::errors::EnvArgumentError::new_err(format!(
                "env index {index} out of range for {} envs",
                self.num_envs
            )));
        }
        Ok(())
    }
}

/// The registered env ids (without the "vlmrl_fast/" namespace).
#[pyfunction]
fn list_envs() -> Vec<&'static str> {
    vlmrl_envs::list_envs()
}

/// Adds VecEnv and list_envs to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<VecEnv>()?;
    m.add_function(wrap_pyfunction!(list_envs, m)?)?;
    Ok(())
}
