//! Points24-v0 (gym_cards rules): four cards, ranks uniform in 1..13; type a
//! formula that makes 24 with every card exactly once, then "=".
//! kwargs: treat_face_cards_as_10 (True: J, Q, K count 10 and the number
//! actions are 1..10; False: they count 11, 12, 13 and the actions are 1..13),
//! target_points (24), scoring ("exact", or "python" to score "=" with
//! Python's floats as gym_cards does).

use vlmrl_core::card::Card;
use vlmrl_core::env::Env;
use vlmrl_core::error::EnvError;
use vlmrl_core::rng::Rng;

use crate::formula_game::{self, random_suit, FormulaGame, Layout, Rules};
use crate::solver::Op;
use crate::{kwargs, Kwargs};

const ID: &str = "Points24-v0";

fn deal(rng: &mut Rng) -> Vec<Card> {
    let ranks: Vec<u8> = (0..4).map(|_| rng.range_inclusive(1, 13) as u8).collect();
    ranks
        .into_iter()
        .map(|r| Card::new(random_suit(rng), r))
        .collect()
}

/// Registry constructor.
pub fn make(kw: &Kwargs) -> Result<Box<dyn Env>, EnvError> {
    kwargs::check_known(
        ID,
        kw,
        &["treat_face_cards_as_10", "target_points", "scoring"],
    )?;
    let python_scoring = formula_game::python_scoring(ID, kw)?;
    let face10 = kwargs::boolean(ID, kw, "treat_face_cards_as_10", true)?;
    let target = kwargs::int(ID, kw, "target_points", 24, -1_000_000, 1_000_000)?;
    Ok(Box::new(FormulaGame::new(Rules {
        id: ID,
        num_cards: 4,
        numbers: (1..=if face10 { 10 } else { 13 }).collect(),
        ops: &["+", "-", "*", "/", "(", ")", "="],
        solver_ops: &[Op::Add, Op::Sub, Op::Mul, Op::Div],
        max_len: 20,
        target,
        python_scoring,
        face_cards_as_10: face10,
        deal,
        layout: Layout {
            card_w: 64,
            card_h: 90,
            card_y: 60,
            card_x: &[8, 80, 152, 224],
            text_y: 176,
            font_px: 18,
            inline: false,
            formula_lines: 3,
        },
    })))
}
