//! Binding of the text-to-action parser (vlmrl_core::parser) and of the
//! prompt templates (envs/prompts/*.toml, embedded at build time so that the
//! same templates ship inside every wheel and need no data-file lookup).

use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use vlmrl_core::parser::{parse_batch_into, BatchOut, ParserError, Vocab, Vocabs};

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

/// The UTF-8 text of a str, borrowed for as long as the str lives; None when
/// it holds lone surrogates (the pending exception is cleared).
fn utf8_of<'a>(s: Borrowed<'a, '_, PyString>) -> Option<&'a str> {
    let mut size: pyo3::ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live str for 'a; CPython returns a pointer to the str's
    // own UTF-8 buffer (valid UTF-8, kept as long as the str lives) or NULL.
    let data = unsafe { pyo3::ffi::PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut size) };
    if data.is_null() {
        drop(PyErr::take(s.py()));
        return None;
    }
    // SAFETY: see above; `size` is the buffer's length in bytes.
    Some(unsafe {
        std::str::from_utf8_unchecked(std::slice::from_raw_parts(data.cast::<u8>(), size as usize))
    })
}

/// A str with lone surrogates (which UTF-8 cannot hold): each becomes U+FFFD,
/// whose UTF-8 form also has 3 bytes, so every code-point offset stays right.
fn replace_surrogates(s: Borrowed<'_, '_, PyString>) -> PyResult<String> {
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
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

fn seq_items<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if let Ok(l) = obj.cast::<PyList>() {
        return Ok(l.iter().collect());
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return Ok(t.iter().collect());
    }
    Err(ParserTypeError::new_err(format!(
        "{what} must be a list or tuple, not {}",
        type_name(obj)
    )))
}

fn names_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    seq_items(obj, what)?
        .iter()
        .enumerate()
        .map(|(j, n)| {
            n.cast::<PyString>()
                .map_err(|_| ())
                .and_then(|s| s.to_str().map(str::to_owned).map_err(|_| ()))
                .map_err(|_| {
                    ParserTypeError::new_err(format!(
                        "{what}[{j}] must be a str without lone surrogates, not {}",
                        type_name(n)
                    ))
                })
        })
        .collect()
}

type Arrays<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<bool>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<i64>>,
);

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
    // A tuple is immutable, so the str objects it holds (and their UTF-8
    // buffers) stay alive and unchanged while the GIL is released; a list is
    // copied into one first (a single C loop).
    let tuple: Bound<'py, PyTuple> = if let Ok(t) = texts.cast::<PyTuple>() {
        t.clone()
    } else if let Ok(l) = texts.cast::<PyList>() {
        l.to_tuple()
    } else {
        return Err(ParserTypeError::new_err(format!(
            "texts must be a list or tuple, not {}",
            type_name(texts)
        )));
    };
    let n = tuple.len();
    let mut fixed: Vec<(usize, String)> = Vec::new();
    let mut strs: Vec<&str> = Vec::with_capacity(n);
    let mut ascii: Vec<bool> = Vec::with_capacity(n);
    for (i, item) in tuple.iter_borrowed().enumerate() {
        let s = item.cast::<PyString>().map_err(|_| {
            ParserTypeError::new_err(format!("texts[{i}] must be str, not {}", type_name(&item)))
        })?;
        match utf8_of(s) {
            Some(t) => {
                // Code points == bytes exactly when the text is ASCII.
                ascii.push(s.code_point_len()? == t.len());
                strs.push(t);
            }
            None => {
                fixed.push((i, replace_surrogates(s)?));
                ascii.push(false);
                strs.push("");
            }
        }
    }
    for (i, t) in &fixed {
        strs[*i] = t.as_str();
    }
    let name_items = seq_items(action_names, "action_names")?;
    // One list for all texts when its first element is a str; else one per text.
    let per_text = match name_items.first() {
        Some(first) => !first.is_instance_of::<PyString>(),
        None if n == 0 => false,
        None => {
            return Err(ActionNamesError::new_err(
                "action_names is empty: pass the action names (one list for all texts, or one list per text)",
            ))
        }
    };
    let lists: Vec<Vec<String>> = if per_text {
        name_items
            .iter()
            .enumerate()
            .map(|(i, l)| names_of(l, &format!("action_names[{i}]")))
            .collect::<PyResult<_>>()?
    } else {
        vec![names_of(action_names, "action_names")?]
    };
    // Output arrays allocated (zeroed) up front; the parser writes into them
    // with the GIL released. They reach Python only after it is done.
    let n = strs.len();
    let index = PyArray1::<i64>::zeros(py, n, false);
    let valid = PyArray1::<bool>::zeros(py, n, false);
    let key_start = PyArray1::<i64>::zeros(py, n, false);
    let value_span = PyArray2::<i64>::zeros(py, [n, 2], false);
    // SAFETY: the arrays were just created here, are C-contiguous, and no
    // other reference to them exists until they are returned.
    let out = unsafe {
        BatchOut {
            index: index
                .as_slice_mut()
                .map_err(|e| ParserInternalError::new_err(e.to_string()))?,
            valid: valid
                .as_slice_mut()
                .map_err(|e| ParserInternalError::new_err(e.to_string()))?,
            key_start: key_start
                .as_slice_mut()
                .map_err(|e| ParserInternalError::new_err(e.to_string()))?,
            value_span: value_span
                .as_slice_mut()
                .map_err(|e| ParserInternalError::new_err(e.to_string()))?,
        }
    };
    let result = py.detach(|| {
        catch_unwind(AssertUnwindSafe(|| -> Result<(), ParserError> {
            let vocabs: Vec<Vocab> = lists
                .iter()
                .map(|l| Vocab::new(l))
                .collect::<Result<_, _>>()?;
            let vocabs = if per_text {
                Vocabs::PerText(&vocabs)
            } else {
                Vocabs::Shared(&vocabs[0])
            };
            parse_batch_into(&strs, Some(&ascii), vocabs, out)
        }))
    });
    match result {
        Ok(r) => r.map_err(to_py)?,
        Err(_) => {
            return Err(ParserInternalError::new_err(
                "parser panicked; please report this input",
            ))
        }
    }
    Ok((index, valid, key_start, value_span))
}

/// The prompt templates, file name stem -> TOML text.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "NumberLine-v0",
        include_str!("../../../envs/prompts/NumberLine-v0.toml"),
    ),
    (
        "EZPoints-v0",
        include_str!("../../../envs/prompts/EZPoints-v0.toml"),
    ),
    (
        "Points24-v0",
        include_str!("../../../envs/prompts/Points24-v0.toml"),
    ),
    (
        "Blackjack-v0",
        include_str!("../../../envs/prompts/Blackjack-v0.toml"),
    ),
    (
        "ALFWorld-v0",
        include_str!("../../../envs/prompts/ALFWorld-v0.toml"),
    ),
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
