//! Binding of the trajectory buffer and of CPU GAE (`vlmrl_core::buffer`,
//! `vlmrl_core::gae`). Buffer arrays are writable numpy views of the Rust
//! storage: no copies in either direction.

use std::sync::{Mutex, MutexGuard};

use numpy::ndarray::{ArrayView2, ArrayView3};
use numpy::{
    Element, PyArray, PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use vlmrl_core::buffer::{BufferError, StepRecord, TrajectoryBuffer as CoreBuffer};
use vlmrl_core::gae::{gae as core_gae, Float, GaeInputs};

use crate::errors::EnvArgumentError;

fn buffer_err(e: BufferError) -> PyErr {
    EnvArgumentError::new_err(e.to_string())
}

/// Rollout storage for T steps x N envs; see the attribute docs in the stub.
#[pyclass(module = "vlmrl_fast._core")]
pub struct TrajectoryBuffer {
    inner: Mutex<CoreBuffer>,
    num_steps: usize,
    num_envs: usize,
    max_tokens: usize,
}

impl TrajectoryBuffer {
    fn lock(&self, py: Python<'_>) -> MutexGuard<'_, CoreBuffer> {
        // Detaches from Python while waiting (no GIL deadlock between threads).
        self.inner
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// A [T, N] view of one field, kept alive by the buffer object.
fn view2<'py, T: Element>(
    slf: &Bound<'py, TrajectoryBuffer>,
    pick: fn(&CoreBuffer) -> &Vec<T>,
) -> PyResult<Bound<'py, PyArray2<T>>> {
    let me = slf.borrow();
    let inner = me.lock(slf.py());
    let view = ArrayView2::from_shape((me.num_steps, me.num_envs), pick(&inner).as_slice())
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    // SAFETY: the Vec is allocated once and lives as long as `slf`.
    Ok(unsafe { PyArray2::borrow_from_array(&view, slf.clone().into_any()) })
}

#[pymethods]
impl TrajectoryBuffer {
    #[new]
    #[pyo3(signature = (num_steps, num_envs, max_tokens=256, pad_id=0))]
    fn new(num_steps: usize, num_envs: usize, max_tokens: usize, pad_id: i64) -> PyResult<Self> {
        let inner = CoreBuffer::new(num_steps, num_envs, max_tokens, pad_id).map_err(buffer_err)?;
        Ok(TrajectoryBuffer {
            inner: Mutex::new(inner),
            num_steps,
            num_envs,
            max_tokens,
        })
    }

    #[getter]
    fn num_steps(&self) -> usize {
        self.num_steps
    }
    #[getter]
    fn num_envs(&self) -> usize {
        self.num_envs
    }
    #[getter]
    fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    fn __len__(&self, py: Python<'_>) -> usize {
        self.lock(py).len
    }

    /// Forgets the stored steps (arrays keep their memory and addresses).
    fn reset(&self, py: Python<'_>) {
        self.lock(py).reset()
    }

    /// Appends one step of all envs; returns its step index.
    #[pyo3(signature = (actions, rewards, terminated, truncated, values, logprobs, token_ids=None))]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        py: Python<'_>,
        actions: Vec<i64>,
        rewards: Vec<f32>,
        terminated: Vec<bool>,
        truncated: Vec<bool>,
        values: Vec<f32>,
        logprobs: Vec<f32>,
        token_ids: Option<Vec<Vec<i64>>>,
    ) -> PyResult<usize> {
        let rec = StepRecord {
            actions: &actions,
            rewards: &rewards,
            terminated: &terminated,
            truncated: &truncated,
            values: &values,
            logprobs: &logprobs,
        };
        self.lock(py)
            .add(&rec, token_ids.as_deref())
            .map_err(buffer_err)
    }

    /// Env `index`'s generated tokens at `step`, without padding (a copy).
    fn tokens<'py>(
        &self,
        py: Python<'py>,
        step: usize,
        index: usize,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let inner = self.lock(py);
        Ok(PyArray1::from_slice(
            py,
            inner.tokens(step, index).map_err(buffer_err)?,
        ))
    }

    /// GAE over all T steps into `advantages` and `returns`.
    fn compute_gae(&self, py: Python<'_>, gamma: f64, lam: f64) -> PyResult<()> {
        let mut inner = self.lock(py);
        let b = &mut *inner;
        py.detach(|| b.compute_gae(gamma, lam)).map_err(buffer_err)
    }

    #[getter]
    fn actions<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<i64>>> {
        view2(slf, |b| &b.actions)
    }
    #[getter]
    fn rewards<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        view2(slf, |b| &b.rewards)
    }
    #[getter]
    fn terminated<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<bool>>> {
        view2(slf, |b| &b.terminated)
    }
    #[getter]
    fn truncated<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<bool>>> {
        view2(slf, |b| &b.truncated)
    }
    #[getter]
    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        view2(slf, |b| &b.values)
    }
    #[getter]
    fn next_values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        view2(slf, |b| &b.next_values)
    }
    #[getter]
    fn logprobs<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        view2(slf, |b| &b.logprobs)
    }
    #[getter]
    fn token_lengths<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<i64>>> {
        view2(slf, |b| &b.token_lengths)
    }
    #[getter]
    fn advantages<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        view2(slf, |b| &b.advantages)
    }
    #[getter]
    fn returns<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        view2(slf, |b| &b.returns)
    }
    /// [T, N, max_tokens] generated token ids, padded with pad_id.
    #[getter]
    fn token_ids<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray3<i64>>> {
        let me = slf.borrow();
        let inner = me.lock(slf.py());
        let view = ArrayView3::from_shape(
            (me.num_steps, me.num_envs, me.max_tokens),
            inner.token_ids.as_slice(),
        )
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        // SAFETY: as for view2.
        Ok(unsafe { PyArray3::borrow_from_array(&view, slf.clone().into_any()) })
    }
}

fn slice<'a, T>(name: &str, r: Result<&'a [T], numpy::AsSliceError>) -> PyResult<&'a [T]> {
    r.map_err(|e| EnvArgumentError::new_err(format!("gae: {name}: {e}")))
}

/// Advantages and returns, each `[T, N]`.
type GaeArrays<'py, F> = (Bound<'py, PyArray2<F>>, Bound<'py, PyArray2<F>>);

fn gae_typed<'py, F: Float + Element>(
    py: Python<'py>,
    arrays: [PyReadonlyArray2<'py, F>; 3],
    terminated: &PyReadonlyArray2<'py, bool>,
    truncated: &PyReadonlyArray2<'py, bool>,
    gamma: f64,
    lam: f64,
) -> PyResult<GaeArrays<'py, F>> {
    let [rewards, values, next_values] = arrays;
    let shape = rewards.shape().to_vec();
    for (name, a) in [
        ("values", values.shape()),
        ("next_values", next_values.shape()),
        ("terminated", terminated.shape()),
        ("truncated", truncated.shape()),
    ] {
        if a != shape.as_slice() {
            return Err(EnvArgumentError::new_err(format!(
                "gae: {name} has shape {a:?}, rewards has {shape:?}"
            )));
        }
    }
    let x = GaeInputs {
        rewards: slice("rewards", rewards.as_slice())?,
        values: slice("values", values.as_slice())?,
        next_values: slice("next_values", next_values.as_slice())?,
        terminated: slice("terminated", terminated.as_slice())?,
        truncated: slice("truncated", truncated.as_slice())?,
    };
    let n = shape[1];
    let mut adv = vec![F::from_f64(0.0); shape[0] * n];
    let mut ret = adv.clone();
    py.detach(|| core_gae(&x, n, gamma, lam, &mut adv, &mut ret))
        .map_err(|e| EnvArgumentError::new_err(e.to_string()))?;
    let to2 = |v: Vec<F>| -> PyResult<Bound<'py, PyArray2<F>>> {
        PyArray::from_vec(py, v).reshape([shape[0], n])
    };
    Ok((to2(adv)?, to2(ret)?))
}

/// GAE on the CPU over [T, N] C-contiguous arrays (all float32 or all
/// float64; flags bool). Returns (advantages, returns) in the input dtype.
#[pyfunction]
#[pyo3(signature = (rewards, values, next_values, terminated, truncated, gamma, lam))]
#[allow(clippy::too_many_arguments)]
fn gae<'py>(
    py: Python<'py>,
    rewards: &Bound<'py, PyAny>,
    values: &Bound<'py, PyAny>,
    next_values: &Bound<'py, PyAny>,
    terminated: PyReadonlyArray2<'py, bool>,
    truncated: PyReadonlyArray2<'py, bool>,
    gamma: f64,
    lam: f64,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let (Ok(r), Ok(v), Ok(nv)) = (rewards.extract(), values.extract(), next_values.extract()) {
        let (a, b) = gae_typed::<f32>(py, [r, v, nv], &terminated, &truncated, gamma, lam)?;
        return Ok((a.into_any(), b.into_any()));
    }
    let (r, v, nv) = (
        rewards.extract()?,
        values.extract()?,
        next_values.extract()?,
    );
    let (a, b) = gae_typed::<f64>(py, [r, v, nv], &terminated, &truncated, gamma, lam)?;
    Ok((a.into_any(), b.into_any()))
}

/// Adds TrajectoryBuffer and gae to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TrajectoryBuffer>()?;
    m.add_function(wrap_pyfunction!(gae, m)?)?;
    Ok(())
}
