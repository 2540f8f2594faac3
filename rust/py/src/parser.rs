//! Binding of the text-to-action parser (vlmrl_core::parser) and of the
//! prompt templates (envs/prompts/*.toml, embedded at build time so that the
//! same templates ship inside every wheel and need no data-file lookup).

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use vlmrl_core::parser::{parse_batch, Parsed, ParserError, Vocab, Vocabs};

create_exception!(
    vlmrl_fast._core,
    ActionNamesError,
    PyValueError,
    "The action names given to parse_actions are unusable (an empty name, or a per-text list count that differs from the text count)."
);
create_exception!(
    vlmrl_fast._core,
    ParserTypeError,
    PyTypeError,
    "An argument of parse_actions has the wrong type (texts must be str, action names str)."
);
create_exception!(
    vlmrl_fast._core,
    ParserInternalError,
    PyRuntimeError,
    "A bug in the parser (a Rust panic), reported instead of crashing the process."
);

fn to_py(e: ParserError) -> PyErr {
    ActionNamesError::new_err(e.to_string())
}

/// Python code points are kept one-to-one: a lone surrogate (which UTF-8
/// cannot hold) becomes U+FFFD, whose UTF-8 form also has 3 bytes, so every
/// code-point offset stays right.
fn text_of<'a>(item: &'a Bound<'_, PyAny>, i: usize) -> PyResult<Cow<'a, str>> {
    let s = item.cast::<PyString>().map_err(|_| {
        let ty = item.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        ParserTypeError::new_err(format!("texts[{i}] must be str, not {ty}"))
    })?;
    if let Ok(t) = s.to_str() {
        return Ok(Cow::Borrowed(t));
    }
    let raw = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
    let mut bytes: Vec<u8> = raw.extract()?;
    let mut k = 0;
    while k + 2 < bytes.len() {
        if bytes[k] == 0xED && bytes[k + 1] >= 0xA0 {
            bytes[k..k + 3].copy_from_slice("\u{FFFD}".as_bytes());
            k += 3;
        } else {
            k += 1;
        }
    }
    Ok(Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()))
}

fn seq_items<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if let Ok(l) = obj.cast::<PyList>() {
        return Ok(l.iter().collect());
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return Ok(t.iter().collect());
    }
    let ty = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    Err(ParserTypeError::new_err(format!("{what} must be a list or tuple, not {ty}")))
}

fn names_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    seq_items(obj, what)?
        .iter()
        .enumerate()
        .map(|(j, n)| {
            n.cast::<PyString>().map_err(|_| ()).and_then(|s| s.to_str().map(str::to_owned).map_err(|_| ())).map_err(
                |_| {
                    let ty = n.get_type().name().map(|x| x.to_string()).unwrap_or_default();
                    ParserTypeError::new_err(format!("{what}[{j}] must be a str without lone surrogates, not {ty}"))
                },
            )
        })
        .collect()
}

type Arrays<'py> =
    (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<bool>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray2<i64>>);

/// parse_actions(texts, action_names)
/// --
///
/// Parse a batch of answers; see vlmrl_fast.parse_actions. `action_names` is
/// one list of str for all texts, or one list per text. Returns the arrays
/// (index int64 [N], valid bool [N], key_start int64 [N], value_span int64 [N, 2]).
#[pyfunction]
#[pyo3(name = "parse_actions")]
fn py_parse_actions<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    action_names: &Bound<'py, PyAny>,
) -> PyResult<Arrays<'py>> {
    let items = seq_items(texts, "texts")?;
    let strs: Vec<Cow<'_, str>> = items.iter().enumerate().map(|(i, t)| text_of(t, i)).collect::<PyResult<_>>()?;
    let name_items = seq_items(action_names, "action_names")?;
    // One list for all texts when its first element is a str; else one per text.
    let per_text = match name_items.first() {
        Some(first) => !first.is_instance_of::<PyString>(),
        None if strs.is_empty() => false,
        None => {
            return Err(ActionNamesError::new_err(
                "action_names is empty: pass the action names (one list for all texts, or one list per text)",
            ))
        }
    };
    let lists: Vec<Vec<String>> = if per_text {
        name_items.iter().enumerate().map(|(i, l)| names_of(l, &format!("action_names[{i}]"))).collect::<PyResult<_>>()?
    } else {
        vec![names_of(action_names, "action_names")?]
    };
    let result = py.detach(|| {
        catch_unwind(AssertUnwindSafe(|| -> Result<Vec<Parsed>, ParserError> {
            let refs: Vec<&str> = strs.iter().map(|s| s.as_ref()).collect();
            let vocabs: Vec<Vocab> = lists.iter().map(|l| Vocab::new(l)).collect::<Result<_, _>>()?;
            let mut out = vec![Parsed::NONE; refs.len()];
            if per_text {
                parse_batch(&refs, Vocabs::PerText(&vocabs), &mut out)?;
            } else {
                parse_batch(&refs, Vocabs::Shared(&vocabs[0]), &mut out)?;
            }
            Ok(out)
        }))
    });
    let parsed = match result {
        Ok(r) => r.map_err(to_py)?,
        Err(_) => return Err(ParserInternalError::new_err("parser panicked; please report this input")),
    };
    let n = parsed.len();
    let index: Vec<i64> = parsed.iter().map(|p| p.index).collect();
    let valid: Vec<bool> = parsed.iter().map(Parsed::valid).collect();
    let key_start: Vec<i64> = parsed.iter().map(|p| p.key_start).collect();
    let spans: Vec<i64> = parsed.iter().flat_map(|p| [p.value_start, p.value_end]).collect();
    let spans = Array2::from_shape_vec((n, 2), spans).expect("two offsets per answer");
    Ok((index.into_pyarray(py), valid.into_pyarray(py), key_start.into_pyarray(py), spans.into_pyarray(py)))
}

/// The prompt templates, file name stem -> TOML text.
const TEMPLATES: &[(&str, &str)] = &[
    ("NumberLine-v0", include_str!("../../../envs/prompts/NumberLine-v0.toml")),
    ("EZPoints-v0", include_str!("../../../envs/prompts/EZPoints-v0.toml")),
    ("Points24-v0", include_str!("../../../envs/prompts/Points24-v0.toml")),
    ("Blackjack-v0", include_str!("../../../envs/prompts/Blackjack-v0.toml")),
    ("ALFWorld-v0", include_str!("../../../envs/prompts/ALFWorld-v0.toml")),
];

/// prompt_templates()
/// --
///
/// The prompt templates built into this module: {env_id: TOML text}.
#[pyfunction]
fn prompt_templates(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in TEMPLATES {
        d.set_item(k, v)?;
    }
    Ok(d)
}

/// Register the parser's functions and exceptions on `vlmrl_fast._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(py_parse_actions, m)?)?;
    m.add_function(wrap_pyfunction!(prompt_templates, m)?)?;
    m.add("ActionNamesError", py.get_type::<ActionNamesError>())?;
    m.add("ParserTypeError", py.get_type::<ParserTypeError>())?;
    m.add("ParserInternalError", py.get_type::<ParserInternalError>())?;
    Ok(())
}
