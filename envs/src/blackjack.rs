//! Blackjack-v0 (gymnasium's rules; kwargs natural=False, sab=False): infinite
//! deck, ace counts 11 unless that busts, action 0 = "stand", 1 = "hit";
//! hitting past 21 loses (-1); standing lets the dealer draw to 17 or more,
//! then +1 / 0 / -1. The dealer's second card is face down until the hand
//! ends. A drawn 10-value card shows as J, Q or K.
//!
//! kwargs, with gymnasium's meaning: `natural` pays 1.5 for a win with a
//! natural (an ace and a 10-value card as the whole hand); `sab` (Sutton and
//! Barto's rules, `natural` then ignored) makes a player's natural win +1
//! unless the dealer has one too. gym_cards accepts both but its natural
//! check compares (value, face, suit) tuples with [1, 10], so there they
//! never fire; here they do what gymnasium documents.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{json, Value};
use vlmrl_core::card::Card;
use vlmrl_core::env::{Env, Info, Transition};
use vlmrl_core::error::EnvError;
use vlmrl_core::font::{Face, Font};
use vlmrl_core::render::{Canvas, CardFace, CardRow, CardSprites, TextField, TABLE_GREEN, WHITE};
use vlmrl_core::rng::Rng;

use crate::formula_game::random_suit;
use crate::{kwargs, state, Kwargs};

const ID: &str = "Blackjack-v0";
const CARD_W: usize = 64;
const CARD_H: usize = 90;
const DEALER_Y: i32 = 42;
const PLAYER_Y: i32 = 180;

/// The Blackjack game.
pub struct Blackjack {
    player: Vec<Card>,
    dealer: Vec<Card>,
    /// Scripted next draws (from an explicit state), used before random ones.
    deck: VecDeque<Card>,
    over: bool,
    natural: bool,
    sab: bool,
    sprites: Arc<CardSprites>,
    dealer_row: CardRow,
    player_row: CardRow,
    dealer_label: TextField,
    player_label: TextField,
}

/// Registry constructor. kwargs: natural (False), sab (False).
pub fn make(kw: &Kwargs) -> Result<Box<dyn Env>, EnvError> {
    kwargs::check_known(ID, kw, &["natural", "sab"])?;
    let natural = kwargs::boolean(ID, kw, "natural", false)?;
    let sab = kwargs::boolean(ID, kw, "sab", false)?;
    let font = Font::get(Face::Bold, 22);
    Ok(Box::new(Blackjack {
        player: Vec::new(),
        dealer: Vec::new(),
        deck: VecDeque::new(),
        over: false,
        natural,
        sab,
        sprites: CardSprites::get(CARD_W, CARD_H, TABLE_GREEN),
        dealer_row: CardRow::new(DEALER_Y, TABLE_GREEN),
        player_row: CardRow::new(PLAYER_Y, TABLE_GREEN),
        dealer_label: TextField::new(10, 10, 280, 28, TABLE_GREEN, WHITE, font.clone()),
        player_label: TextField::new(10, 148, 280, 28, TABLE_GREEN, WHITE, font),
    }))
}

/// Value of a card in blackjack (ace 1, faces 10).
fn value(c: &Card) -> u32 {
    c.value10() as u32
}

/// (best total, usable ace): an ace counts 11 when that does not bust.
pub fn hand_total(hand: &[Card]) -> (u32, bool) {
    let sum: u32 = hand.iter().map(value).sum();
    let usable = hand.iter().any(|c| c.rank == 1) && sum + 10 <= 21;
    (if usable { sum + 10 } else { sum }, usable)
}

/// A natural: the hand is exactly an ace and a 10-value card.
fn is_natural(hand: &[Card]) -> bool {
    let mut v: Vec<u32> = hand.iter().map(value).collect();
    v.sort_unstable();
    v == [1, 10]
}

fn score(hand: &[Card]) -> u32 {
    let (t, _) = hand_total(hand);
    if t > 21 {
        0
    } else {
        t
    }
}

impl Blackjack {
    fn draw(&mut self, rng: &mut Rng) -> Card {
        if let Some(c) = self.deck.pop_front() {
            return c;
        }
        // Values 1..9 and four 10s per 13, as gymnasium's deck; a 10 shows as J, Q or K.
        let v = rng.range_inclusive(1, 13) as u8;
        let rank = if v >= 10 { 11 + rng.below(3) as u8 } else { v };
        Card::new(random_suit(rng), rank)
    }

    /// The player's cards and the dealer's visible cards, as card strings.
    fn card_names(&self) -> (Vec<String>, Vec<String>) {
        let names = |cards: &[Card]| cards.iter().map(|c| c.to_string()).collect();
        (names(&self.player), names(self.visible_dealer()))
    }

    fn visible_dealer(&self) -> &[Card] {
        if self.over {
            &self.dealer
        } else {
            &self.dealer[..1.min(self.dealer.len())]
        }
    }
}

/// Card slots of a row: 72 px apart, closer when the row would not fit.
fn slots(cards: &[Card], hide_second: bool) -> Vec<(i32, CardFace)> {
    let n = cards.len() as i32;
    let step = if n <= 1 {
        0
    } else {
        72.min((300 - 16 - CARD_W as i32) / (n - 1))
    };
    cards
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            (
                8 + i as i32 * step,
                if hide_second && i == 1 {
                    CardFace::Down
                } else {
                    CardFace::Up(c)
                },
            )
        })
        .collect()
}

impl Env for Blackjack {
    fn id(&self) -> &str {
        ID
    }
    fn action_names(&self) -> Vec<String> {
        vec!["stand".into(), "hit".into()]
    }
    fn num_actions(&self) -> usize {
        2
    }
    fn reset(&mut self, rng: &mut Rng, st: Option<&Value>) -> Result<(), EnvError> {
        self.over = false;
        self.deck.clear();
        match st {
            None => {
                // gymnasium deals the dealer's hand first, then the player's.
                self.dealer = vec![self.draw(rng), self.draw(rng)];
                self.player = vec![self.draw(rng), self.draw(rng)];
            }
            Some(v) => {
                let obj = state::object(ID, v, &["player", "dealer", "deck"])?;
                let player = state::cards(ID, obj, "player")?;
                let dealer = state::cards(ID, obj, "dealer")?;
                if player.len() < 2 {
                    return Err(EnvError::InvalidState(format!(
                        "{ID} state \"player\" must hold at least 2 cards, got {}",
                        player.len()
                    )));
                }
                if hand_total(&player).0 > 21 {
                    return Err(EnvError::InvalidState(format!(
                        "{ID} state \"player\" is already bust"
                    )));
                }
                if dealer.len() != 2 {
                    return Err(EnvError::InvalidState(format!(
                        "{ID} state \"dealer\" must hold 2 cards, got {}",
                        dealer.len()
                    )));
                }
                let deck = if obj.contains_key("deck") {
                    state::cards(ID, obj, "deck")?
                } else {
                    Vec::new()
                };
                self.player = player;
                self.dealer = dealer;
                self.deck = deck.into();
            }
        }
        Ok(())
    }
    fn step(&mut self, action: i64, rng: &mut Rng) -> Result<Transition, EnvError> {
        if action == 1 {
            let c = self.draw(rng);
            self.player.push(c);
            if hand_total(&self.player).0 > 21 {
                self.over = true;
                return Ok(Transition {
                    reward: -1.0,
                    terminated: true,
                    truncated: false,
                });
            }
            return Ok(Transition::running(0.0));
        }
        while hand_total(&self.dealer).0 < 17 {
            let c = self.draw(rng);
            self.dealer.push(c);
        }
        self.over = true;
        let (p, d) = (score(&self.player), score(&self.dealer));
        let mut reward = (p > d) as i32 as f64 - (p < d) as i32 as f64;
        if self.sab && is_natural(&self.player) && !is_natural(&self.dealer) {
            reward = 1.0;
        } else if !self.sab && self.natural && is_natural(&self.player) && reward == 1.0 {
            reward = 1.5;
        }
        Ok(Transition {
            reward,
            terminated: true,
            truncated: false,
        })
    }
    fn info(&self) -> Info {
        let (p, d) = self.card_names();
        json!({"Player Card": p, "Dealer Card": d})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }
    fn text(&self) -> String {
        let (p, d) = self.card_names();
        let hidden = if self.over {
            ""
        } else {
            " and one face-down card"
        };
        format!(
            "Dealer cards: {}{hidden}. Player cards: {} (total {}).",
            d.join(", "),
            p.join(", "),
            hand_total(&self.player).0
        )
    }
    /// Basic strategy (hit/stand only) against a dealer who stands on all 17s.
    fn expert_action(&self) -> i64 {
        let (total, soft) = hand_total(&self.player);
        let up = self
            .dealer
            .first()
            .map(|c| if c.rank == 1 { 11 } else { value(c) })
            .unwrap_or(10);
        let hit = if soft {
            total <= 17 || (total == 18 && up >= 9)
        } else {
            match total {
                0..=11 => true,
                12 => !(4..=6).contains(&up),
                13..=16 => up >= 7,
                _ => false,
            }
        };
        hit as i64
    }
    fn render(&mut self, canvas: &mut Canvas<'_>, full: bool) {
        if full {
            canvas.fill(TABLE_GREEN);
        }
        self.dealer_label.show(canvas, "Dealer", full);
        self.player_label.show(canvas, "Player", full);
        self.dealer_row.show(
            canvas,
            &self.sprites,
            &slots(&self.dealer, !self.over),
            full,
        );
        self.player_row
            .show(canvas, &self.sprites, &slots(&self.player, false), full);
    }
}
