//! One ALFWorld episode as pure game logic: the world, the admissible
//! commands of the current state, the last feedback, the reward and the
//! step limit. The `Env` glue (mod.rs) and the image (image.rs) sit on top.

use super::command::{self, Command};
use super::expert;
use super::task::TaskType;
use super::world::{Dice, World};

/// Feedback for an inadmissible command, as in ALFWorld.
pub const NOTHING_HAPPENS: &str = "Nothing happens.";
/// Reward for winning, on top of the goal-condition success rate.
pub const WIN_BONUS: f64 = 50.0;
/// Penalty for an inadmissible command.
pub const INADMISSIBLE_PENALTY: f64 = 1.0;

/// One episode in progress.
#[derive(Debug, Clone)]
pub struct Game {
    pub world: World,
    /// The admissible commands of the current state, sorted by text.
    pub admissible: Vec<(String, Command)>,
    /// The feedback of the last command (the intro after a reset).
    pub feedback: String,
    pub steps: u32,
    pub max_steps: u32,
    pub won: bool,
    /// Satisfied / total goal conditions.
    pub goal_condition_success_rate: f64,
}

/// Outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
    /// False when the action was -1 (an inadmissible command).
    pub admissible: bool,
}

impl Game {
    /// A new episode in a world generated with a task of type `ttype` (drawn
    /// uniformly from all six when None).
    pub fn new(d: &mut impl Dice, ttype: Option<TaskType>, max_steps: u32) -> Game {
        Game::from_world(World::generate(d, ttype), max_steps)
    }

    /// A new episode in a given world.
    pub fn from_world(world: World, max_steps: u32) -> Game {
        let feedback = command::intro(&world);
        let mut g = Game {
            admissible: Vec::new(),
            feedback,
            steps: 0,
            max_steps,
            won: false,
            goal_condition_success_rate: 0.0,
            world,
        };
        g.refresh();
        g
    }

    /// Recomputes the admissible commands and the goal conditions.
    fn refresh(&mut self) {
        self.admissible = command::admissible(&self.world);
        let (done, total) = self.world.task.goal_conditions(&self.world);
        self.goal_condition_success_rate = done as f64 / total as f64;
        self.won = done == total;
    }

    /// Steps with the index of an admissible command, or -1 for a command
    /// that is not admissible (state unchanged, "Nothing happens.", -1).
    /// The caller has checked that `action` is -1 or a valid index.
    pub fn step(&mut self, action: i64) -> StepResult {
        self.steps += 1;
        let admissible = action >= 0;
        if admissible {
            let cmd = self.admissible[action as usize].1;
            self.feedback = command::execute(&mut self.world, cmd);
            self.refresh();
        } else {
            self.feedback.clear();
            self.feedback.push_str(NOTHING_HAPPENS);
        }
        let mut reward = WIN_BONUS * self.won as u8 as f64 + self.goal_condition_success_rate;
        if !admissible {
            reward -= INADMISSIBLE_PENALTY;
        }
        StepResult {
            reward,
            terminated: self.won,
            truncated: !self.won && self.steps >= self.max_steps,
            admissible,
        }
    }

    /// Index of the admissible command with this exact text.
    pub fn command_index(&self, text: &str) -> Option<usize> {
        self.admissible
            .binary_search_by(|c| c.0.as_str().cmp(text))
            .ok()
    }

    /// The expert's next command, as an index into the admissible list.
    pub fn expert_action(&self) -> i64 {
        let cmd = expert::next_command(&self.world);
        match self.admissible.iter().position(|c| c.1 == cmd) {
            Some(i) => i as i64,
            // The planner only proposes admissible commands; "look" is
            // always admissible and harmless should that ever fail.
            None => self
                .admissible
                .iter()
                .position(|c| c.1 == Command::Look)
                .map_or(0, |i| i as i64),
        }
    }
}
