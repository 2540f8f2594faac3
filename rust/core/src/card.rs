//! Playing cards: suit + rank, with the card-string format used everywhere in
//! the project: suit (C, D, H, S) followed by rank (A, 2..9, T, J, Q, K).

use std::fmt;

/// A card suit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Suit {
    Clubs,
    Diamonds,
    Hearts,
    Spades,
}

impl Suit {
    /// All suits, in card-string letter order C, D, H, S.
    pub const ALL: [Suit; 4] = [Suit::Clubs, Suit::Diamonds, Suit::Hearts, Suit::Spades];

    /// The card-string letter.
    pub fn letter(self) -> char {
        match self {
            Suit::Clubs => 'C',
            Suit::Diamonds => 'D',
            Suit::Hearts => 'H',
            Suit::Spades => 'S',
        }
    }

    /// The suit symbol drawn on the card.
    pub fn symbol(self) -> char {
        match self {
            Suit::Clubs => '\u{2663}',
            Suit::Diamonds => '\u{2666}',
            Suit::Hearts => '\u{2665}',
            Suit::Spades => '\u{2660}',
        }
    }

    /// Hearts and diamonds are red.
    pub fn is_red(self) -> bool {
        matches!(self, Suit::Hearts | Suit::Diamonds)
    }

    fn from_letter(c: char) -> Option<Suit> {
        Suit::ALL.into_iter().find(|s| s.letter() == c)
    }
}

/// A playing card; `rank` is 1 (ace) ..= 13 (king).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Card {
    pub suit: Suit,
    pub rank: u8,
}

const RANK_LETTERS: [char; 13] = [
    'A', '2', '3', '4', '5', '6', '7', '8', '9', 'T', 'J', 'Q', 'K',
];

impl Card {
    /// A card; panics on a rank outside 1..=13 (a programming error).
    pub fn new(suit: Suit, rank: u8) -> Card {
        assert!((1..=13).contains(&rank), "card rank {rank} outside 1..=13");
        Card { suit, rank }
    }

    /// Parses a card string such as "H5", "ST", "CA" (case-sensitive, as the
    /// info dicts print them). The error message names the bad string.
    pub fn parse(s: &str) -> Result<Card, String> {
        let mut chars = s.chars();
        let (Some(sc), Some(rc), None) = (chars.next(), chars.next(), chars.next()) else {
            return Err(format!(
                "unknown card {s:?}: expected suit (C, D, H, S) + rank (A, 2..9, T, J, Q, K), e.g. \"HT\""
            ));
        };
        let suit = Suit::from_letter(sc);
        let rank = RANK_LETTERS.iter().position(|&r| r == rc);
        match (suit, rank) {
            (Some(suit), Some(r)) => Ok(Card {
                suit,
                rank: r as u8 + 1,
            }),
            _ => Err(format!(
                "unknown card {s:?}: expected suit (C, D, H, S) + rank (A, 2..9, T, J, Q, K), e.g. \"HT\""
            )),
        }
    }

    /// The rank letter of the card string (A, 2..9, T, J, Q, K).
    pub fn rank_letter(self) -> char {
        RANK_LETTERS[(self.rank - 1) as usize]
    }

    /// The rank as printed on the card face ("A", "2".."10", "J", "Q", "K").
    pub fn rank_label(self) -> &'static str {
        const LABELS: [&str; 13] = [
            "A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K",
        ];
        LABELS[(self.rank - 1) as usize]
    }

    /// The value with face cards counted as 10 (A = 1).
    pub fn value10(self) -> u8 {
        self.rank.min(10)
    }
}

impl fmt::Display for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.suit.letter(), self.rank_letter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        for suit in Suit::ALL {
            for rank in 1..=13 {
                let c = Card::new(suit, rank);
                assert_eq!(Card::parse(&c.to_string()), Ok(c));
            }
        }
        assert_eq!(Card::parse("HT").unwrap().value10(), 10);
        assert_eq!(Card::parse("SK").unwrap().rank_label(), "K");
        for bad in ["Z9", "H1", "H10", "", "h5", "5H"] {
            let e = Card::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
