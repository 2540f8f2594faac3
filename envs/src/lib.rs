//! vlmrl-envs: one module per game, each implementing `vlmrl_core::env::Env`.
pub mod alfworld;
