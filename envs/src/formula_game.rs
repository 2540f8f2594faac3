//! The game shared by EZPoints and Points24 (gym_cards rules): cards are
//! dealt, the agent types a formula token by token with the card values and
//! operators, and "=" scores it.
//!
//! Per step, as in gym_cards: a formula already longer than `max_len` tokens
//! truncates with -1; a number not among the unused card values appends " "
//! with -1; "=" terminates with 10 when the formula equals the target and
//! every card was used, else -1; any other token is appended with reward 0.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::{json, Value};
use vlmrl_core::card::{Card, Suit};
use vlmrl_core::env::{Env, Info, Transition};
use vlmrl_core::error::EnvError;
use vlmrl_core::font::{Face, Font};
use vlmrl_core::render::{Canvas, CardFace, CardRow, CardSprites, TextField, TABLE_GREEN, WHITE};
use vlmrl_core::rng::Rng;

use crate::formula::{self, Token};
use crate::solver::{self, Op};
use crate::state;

/// Where things are drawn.
pub struct Layout {
    pub card_w: usize,
    pub card_h: usize,
    pub card_y: i32,
    /// Left edge of each card.
    pub card_x: &'static [i32],
    /// Top of the "Formula:" label; formula lines follow below it.
    pub text_y: i32,
    pub font_px: u32,
    /// Formula on the label's line ("Formula: 1 + 2") rather than below it.
    pub inline: bool,
    pub formula_lines: usize,
}

/// What distinguishes one formula game from the other.
pub struct Rules {
    pub id: &'static str,
    pub num_cards: usize,
    /// Number tokens, in action order (actions 0..numbers.len()).
    pub numbers: Vec<i64>,
    /// Operator tokens after the numbers, "=" last.
    pub ops: &'static [&'static str],
    pub solver_ops: &'static [Op],
    pub max_len: usize,
    pub target: i64,
    /// Score "=" with Python's ints and floats as gym_cards does
    /// (`scoring="python"`), instead of exactly.
    pub python_scoring: bool,
    pub face_cards_as_10: bool,
    pub deal: fn(&mut Rng) -> Vec<Card>,
    pub layout: Layout,
}

/// A formula game (EZPoints-v0 or Points24-v0, by its [`Rules`]).
pub struct FormulaGame {
    rules: Rules,
    cards: Vec<Card>,
    values: Vec<i64>,
    formula: Vec<Token>,
    used: Vec<i64>,
    /// The expert's current plan: a full solution extending the formula, or
    /// None when none exists. Cached because solving from a prefix is costly.
    plan: RefCell<Option<Option<Vec<Token>>>>,
    sprites: Arc<CardSprites>,
    card_row: CardRow,
    label: TextField,
    lines: Vec<TextField>,
}

/// The `scoring` kwarg: "exact" (default) or "python" (gym_cards' floats).
pub fn python_scoring(id: &str, kw: &crate::Kwargs) -> Result<bool, EnvError> {
    match kw.get("scoring") {
        None => Ok(false),
        Some(v) => match v.as_str() {
            Some("exact") => Ok(false),
            Some("python") => Ok(true),
            _ => Err(EnvError::InvalidArgument(format!(
                "{id}: scoring must be \"exact\" or \"python\", got {v}"
            ))),
        },
    }
}

/// Uniform random suit.
pub fn random_suit(rng: &mut Rng) -> Suit {
    Suit::ALL[rng.below(4) as usize]
}

impl FormulaGame {
    pub fn new(rules: Rules) -> FormulaGame {
        let l = &rules.layout;
        let font = Font::get(Face::Bold, l.font_px);
        let line_h = font.line_height + 2;
        let label = TextField::new(8, l.text_y, 292, line_h, TABLE_GREEN, WHITE, font.clone());
        let first = if l.inline {
            l.text_y
        } else {
            l.text_y + line_h
        };
        let lines = (0..if l.inline { 0 } else { l.formula_lines })
            .map(|i| {
                TextField::new(
                    8,
                    first + i as i32 * line_h,
                    292,
                    line_h,
                    TABLE_GREEN,
                    WHITE,
                    font.clone(),
                )
            })
            .collect();
        let sprites = CardSprites::get(l.card_w, l.card_h, TABLE_GREEN);
        let card_y = l.card_y;
        FormulaGame {
            rules,
            cards: Vec::new(),
            values: Vec::new(),
            formula: Vec::new(),
            used: Vec::new(),
            plan: RefCell::new(None),
            sprites,
            card_row: CardRow::new(card_y, TABLE_GREEN),
            label,
            lines,
        }
    }

    pub fn id(&self) -> &'static str {
        self.rules.id
    }

    pub fn action_names(&self) -> Vec<String> {
        let nums = self.rules.numbers.iter().map(|n| n.to_string());
        nums.chain(self.rules.ops.iter().map(|s| s.to_string()))
            .collect()
    }

    pub fn num_actions(&self) -> usize {
        self.rules.numbers.len() + self.rules.ops.len()
    }

    fn value_of(&self, c: Card) -> i64 {
        if self.rules.face_cards_as_10 {
            c.value10() as i64
        } else {
            c.rank as i64
        }
    }

    pub fn reset(&mut self, rng: &mut Rng, st: Option<&Value>) -> Result<(), EnvError> {
        let id = self.rules.id;
        let cards = match st {
            None => (self.rules.deal)(rng),
            Some(v) => {
                let obj = state::object(id, v, &["cards"])?;
                let cards = state::cards(id, obj, "cards")?;
                if cards.len() != self.rules.num_cards {
                    return Err(EnvError::InvalidState(format!(
                        "{id} state \"cards\" must hold {} cards, got {}",
                        self.rules.num_cards,
                        cards.len()
                    )));
                }
                cards
            }
        };
        self.values = cards.iter().map(|&c| self.value_of(c)).collect();
        self.cards = cards;
        self.formula.clear();
        self.used.clear();
        *self.plan.borrow_mut() = None;
        Ok(())
    }

    pub fn step(&mut self, action: i64) -> Result<Transition, EnvError> {
        if self.formula.len() > self.rules.max_len {
            return Ok(Transition {
                reward: -1.0,
                terminated: false,
                truncated: true,
            });
        }
        let nn = self.rules.numbers.len();
        let a = action as usize;
        if a < nn {
            let v = self.rules.numbers[a];
            let have = self.values.iter().filter(|&&x| x == v).count();
            let spent = self.used.iter().filter(|&&x| x == v).count();
            if spent + 1 > have {
                self.formula.push(Token::Sym(" "));
                return Ok(Transition::running(-1.0));
            }
            self.used.push(v);
            self.formula.push(Token::Num(v));
            return Ok(Transition::running(0.0));
        }
        let op = self.rules.ops[a - nn];
        if op == "=" {
            let equals = if self.rules.python_scoring {
                formula::equals_python
            } else {
                formula::equals
            };
            let ok =
                self.used.len() == self.rules.num_cards && equals(&self.formula, self.rules.target);
            return Ok(Transition {
                reward: if ok { 10.0 } else { -1.0 },
                terminated: true,
                truncated: false,
            });
        }
        self.formula.push(Token::Sym(op));
        Ok(Transition::running(0.0))
    }

    fn formula_json(&self) -> Value {
        Value::Array(
            self.formula
                .iter()
                .map(|t| match t {
                    Token::Num(n) => json!(n),
                    Token::Sym(s) => json!(s),
                })
                .collect(),
        )
    }

    pub fn info(&self) -> Info {
        let cards: Vec<String> = self.cards.iter().map(|c| c.to_string()).collect();
        let v = json!({"Cards": cards, "Numbers": self.values, "Formula": self.formula_json()});
        v.as_object().cloned().unwrap_or_default()
    }

    pub fn text(&self) -> String {
        let cards: Vec<String> = self.cards.iter().map(|c| c.to_string()).collect();
        let nums: Vec<String> = self.values.iter().map(|v| v.to_string()).collect();
        format!(
            "Cards: {}. Numbers: {}. Current formula: {}",
            cards.join(", "),
            nums.join(", "),
            formula::joined(&self.formula)
        )
    }

    fn action_of(&self, t: &Token) -> i64 {
        let nn = self.rules.numbers.len();
        match t {
            Token::Num(v) => self.rules.numbers.iter().position(|x| x == v).unwrap_or(0) as i64,
            Token::Sym(s) => (nn + self.rules.ops.iter().position(|o| o == s).unwrap_or(0)) as i64,
        }
    }

    /// The expert's plan: a full solution extending the current formula (None
    /// when there is none), searched once per prefix it stops fitting.
    fn current_plan(&self) -> Option<Vec<Token>> {
        let mut plan = self.plan.borrow_mut();
        let fits = matches!(&*plan, Some(Some(p)) if p.starts_with(&self.formula));
        if !fits {
            let found = solver::solve_from(
                &self.values,
                self.rules.solver_ops,
                self.rules.target,
                &self.formula,
            );
            *plan = Some(found);
        }
        plan.clone().flatten()
    }

    /// The next token of a solution extending the current formula, or "=".
    pub fn expert_action(&self) -> i64 {
        let equals_action = (self.num_actions() - 1) as i64;
        match self.current_plan() {
            Some(p) if p.len() > self.formula.len() => self.action_of(&p[self.formula.len()]),
            _ => equals_action,
        }
    }

    /// The expert's full solution extending the current formula, written as
    /// the formula is ("(10-4)*(3+1)"); "" when none exists.
    pub fn expert_plan(&self) -> String {
        self.current_plan()
            .map(|p| formula::joined(&p))
            .unwrap_or_default()
    }

    /// The formula as drawn: tokens separated by spaces, wrapped into lines.
    fn formula_lines(&self, font: &Font, width: i32, prefix: &str) -> Vec<String> {
        let mut lines = vec![prefix.to_string()];
        for t in &self.formula {
            let tok = t.to_string();
            let last = lines.last_mut().expect("at least one line");
            let candidate = if last.is_empty() {
                tok.clone()
            } else {
                format!("{last} {tok}")
            };
            if font.text_width(&candidate) <= width || last.is_empty() {
                *last = candidate;
            } else {
                lines.push(tok);
            }
        }
        lines
    }

    pub fn render(&mut self, canvas: &mut Canvas<'_>, full: bool) {
        let l = &self.rules.layout;
        if full {
            canvas.fill(TABLE_GREEN);
        }
        let slots: Vec<(i32, CardFace)> = self
            .cards
            .iter()
            .zip(l.card_x)
            .map(|(&c, &x)| (x, CardFace::Up(c)))
            .collect();
        self.card_row.show(canvas, &self.sprites, &slots, full);
        let font = self.label.font.clone();
        if l.inline {
            let text = self.formula_lines(&font, i32::MAX, "Formula:").remove(0);
            self.label.show(canvas, &text, full);
        } else {
            self.label.show(canvas, "Formula:", full);
            let lines = self.formula_lines(&font, 284, "");
            for (i, field) in self.lines.iter_mut().enumerate() {
                field.show(canvas, lines.get(i).map(String::as_str).unwrap_or(""), full);
            }
        }
    }
}

/// Both EZPoints-v0 and Points24-v0 are this game with their own [`Rules`].
impl Env for FormulaGame {
    fn id(&self) -> &str {
        FormulaGame::id(self)
    }
    fn action_names(&self) -> Vec<String> {
        FormulaGame::action_names(self)
    }
    fn num_actions(&self) -> usize {
        FormulaGame::num_actions(self)
    }
    fn reset(&mut self, rng: &mut Rng, state: Option<&Value>) -> Result<(), EnvError> {
        FormulaGame::reset(self, rng, state)
    }
    fn step(&mut self, action: i64, _rng: &mut Rng) -> Result<Transition, EnvError> {
        FormulaGame::step(self, action)
    }
    fn info(&self) -> Info {
        FormulaGame::info(self)
    }
    fn text(&self) -> String {
        FormulaGame::text(self)
    }
    fn expert_action(&self) -> i64 {
        FormulaGame::expert_action(self)
    }
    fn expert_plan(&self) -> Option<String> {
        Some(FormulaGame::expert_plan(self))
    }
    fn render(&mut self, canvas: &mut Canvas<'_>, full: bool) {
        FormulaGame::render(self, canvas, full)
    }
}
