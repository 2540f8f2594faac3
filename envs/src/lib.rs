//! vlmrl-envs: one module per game, each implementing `vlmrl_core::env::Env`,
//! and the registry that builds them from an id and keyword arguments.
//!
//! To add a game: write its module, then add one line to [`REGISTRY`].

use serde_json::{Map, Value};
use vlmrl_core::env::Env;
use vlmrl_core::error::EnvError;

pub mod alfworld;
pub mod blackjack;
pub mod dummy;
pub mod ezpoints;
pub mod formula;
pub mod formula_game;
pub mod numberline;
pub mod points24;
pub mod solver;

/// Keyword arguments of an env constructor (from Python's **kwargs).
pub type Kwargs = Map<String, Value>;

/// Builds one env from its keyword arguments.
pub type Maker = fn(&Kwargs) -> Result<Box<dyn Env>, EnvError>;

/// One registered env.
pub struct EnvSpec {
    /// The id without namespace, e.g. "Points24-v0" (gymnasium registers it
    /// as "vlmrl_fast/Points24-v0").
    pub id: &'static str,
    /// Listed by `list_envs` and registered with gymnasium (false for the
    /// engine's synthetic test env).
    pub public: bool,
    pub make: Maker,
}

/// Every env the engine can build (one line per env).
#[rustfmt::skip]
pub const REGISTRY: &[EnvSpec] = &[
    EnvSpec { id: "NumberLine-v0", public: true, make: numberline::make },
    EnvSpec { id: "EZPoints-v0", public: true, make: ezpoints::make },
    EnvSpec { id: "Points24-v0", public: true, make: points24::make },
    EnvSpec { id: "Blackjack-v0", public: true, make: blackjack::make },
    EnvSpec { id: "ALFWorld-v0", public: true, make: alfworld::make },
    EnvSpec { id: "Dummy-v0", public: false, make: dummy::make },
];

/// Strips the gymnasium namespace: "vlmrl_fast/Points24-v0" -> "Points24-v0".
pub fn bare_id(id: &str) -> &str {
    id.strip_prefix("vlmrl_fast/").unwrap_or(id)
}

/// Builds the env `id` (with or without the "vlmrl_fast/" namespace).
pub fn make(id: &str, kwargs: &Kwargs) -> Result<Box<dyn Env>, EnvError> {
    let bare = bare_id(id);
    let spec = REGISTRY.iter().find(|s| s.id == bare).ok_or_else(|| {
        let known: Vec<&str> = REGISTRY.iter().filter(|s| s.public).map(|s| s.id).collect();
        EnvError::UnknownEnv(format!("{id} (known: {})", known.join(", ")))
    })?;
    (spec.make)(kwargs)
}

/// The public env ids, without namespace, in registry order.
pub fn list_envs() -> Vec<&'static str> {
    REGISTRY.iter().filter(|s| s.public).map(|s| s.id).collect()
}

/// Reading constructor kwargs with errors that name the argument.
pub mod kwargs {
    use super::Kwargs;
    use vlmrl_core::error::EnvError;

    /// Fails on any key not in `allowed`.
    pub fn check_known(env: &str, kw: &Kwargs, allowed: &[&str]) -> Result<(), EnvError> {
        match kw.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(EnvError::InvalidArgument(format!(
                "{env} got an unexpected keyword argument {k:?} (accepted: {})",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ))),
            None => Ok(()),
        }
    }

    /// An integer argument in `lo..=hi`, or `default` when absent.
    pub fn int(
        env: &str,
        kw: &Kwargs,
        key: &str,
        default: i64,
        lo: i64,
        hi: i64,
    ) -> Result<i64, EnvError> {
        let Some(v) = kw.get(key) else {
            return Ok(default);
        };
        match v.as_i64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(x),
            _ => Err(EnvError::InvalidArgument(format!(
                "{env}: {key} must be an integer in {lo}..={hi}, got {v}"
            ))),
        }
    }

    /// A boolean argument, or `default` when absent.
    pub fn boolean(env: &str, kw: &Kwargs, key: &str, default: bool) -> Result<bool, EnvError> {
        let Some(v) = kw.get(key) else {
            return Ok(default);
        };
        v.as_bool().ok_or_else(|| {
            EnvError::InvalidArgument(format!("{env}: {key} must be a bool, got {v}"))
        })
    }
}

/// Helpers for explicit states (reset options), with errors naming the value.
pub mod state {
    use serde_json::Value;
    use vlmrl_core::card::Card;
    use vlmrl_core::error::EnvError;

    /// The object of an explicit state, with no keys beyond `allowed`.
    pub fn object<'a>(
        env: &str,
        state: &'a Value,
        allowed: &[&str],
    ) -> Result<&'a serde_json::Map<String, Value>, EnvError> {
        let obj = state.as_object().ok_or_else(|| {
            EnvError::InvalidState(format!("{env} state must be a dict, got {state}"))
        })?;
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(EnvError::InvalidState(format!(
                "{env} state has an unknown key {k:?} (accepted: {})",
                allowed.join(", ")
            )));
        }
        Ok(obj)
    }

    /// A list of card strings under `key`.
    pub fn cards(
        env: &str,
        obj: &serde_json::Map<String, Value>,
        key: &str,
    ) -> Result<Vec<Card>, EnvError> {
        let v = obj
            .get(key)
            .ok_or_else(|| EnvError::InvalidState(format!("{env} state needs {key:?}")))?;
        let list = v.as_array().ok_or_else(|| {
            EnvError::InvalidState(format!(
                "{env} state {key:?} must be a list of card strings, got {v}"
            ))
        })?;
        list.iter()
            .map(|c| match c.as_str() {
                Some(s) => Card::parse(s)
                    .map_err(|e| EnvError::InvalidState(format!("{env} state {key:?}: {e}"))),
                None => Err(EnvError::InvalidState(format!(
                    "{env} state {key:?}: card {c} is not a string"
                ))),
            })
            .collect()
    }
}
