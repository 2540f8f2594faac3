//! ALFWorld-v0: ALFWorld-style household tasks (the paper's embodied
//! benchmark), generated from a seed and played through ALFWorld's command
//! grammar, with a 300x300 image of the agent's current view.

pub mod catalog;
pub mod command;
pub mod expert;
pub mod game;
pub mod task;
pub mod world;

#[cfg(test)]
mod tests;
