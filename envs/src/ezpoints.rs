//! EZPoints-v0 (gym_cards rules): two cards whose values make 12 with "+" or
//! "*"; type the formula and press "=".

use vlmrl_core::card::Card;
use vlmrl_core::env::Env;
use vlmrl_core::error::EnvError;
use vlmrl_core::rng::Rng;

use crate::formula_game::{self, random_suit, FormulaGame, Layout, Rules};
use crate::solver::Op;
use crate::{kwargs, Kwargs};

const ID: &str = "EZPoints-v0";
const TARGET: i64 = 12;

/// gym_cards' deal: card 1 has rank 2..13 (value min(rank, 10)); with
/// probability 0.5, when that value divides 12, card 2 has value 12 / v,
/// otherwise 12 - v; the two are swapped with probability 0.5.
fn deal(rng: &mut Rng) -> Vec<Card> {
    let first = Card::new(random_suit(rng), rng.range_inclusive(2, 13) as u8);
    let v = first.value10() as i64;
    let divides = [1, 2, 3, 4, 6].contains(&v);
    // Draw the coin only when it matters, as gym_cards' short-circuit does.
    let second_value = if divides && rng.bernoulli(0.5) {
        TARGET / v
    } else {
        TARGET - v
    };
    let second = Card::new(random_suit(rng), second_value as u8);
    if rng.bernoulli(0.5) {
        vec![second, first]
    } else {
        vec![first, second]
    }
}

/// Registry constructor. kwargs: target_points (12; as in gym_cards it sets
/// what "=" must reach, while the deal still makes 12), scoring ("exact", or
/// "python" to score with Python's floats as gym_cards does).
pub fn make(kw: &Kwargs) -> Result<Box<dyn Env>, EnvError> {
    kwargs::check_known(ID, kw, &["target_points", "scoring"])?;
    let target = kwargs::int(ID, kw, "target_points", TARGET, -1_000_000, 1_000_000)?;
    let python_scoring = formula_game::python_scoring(ID, kw)?;
    Ok(Box::new(FormulaGame::new(Rules {
        id: ID,
        num_cards: 2,
        numbers: (1..=10).collect(),
        ops: &["+", "*", "="],
        solver_ops: &[Op::Add, Op::Mul],
        max_len: 5,
        target,
        python_scoring,
        face_cards_as_10: true,
        deal,
        layout: Layout {
            card_w: 120,
            card_h: 168,
            card_y: 40,
            card_x: &[20, 160],
            text_y: 240,
            font_px: 20,
            inline: true,
            formula_lines: 0,
        },
    })))
}
