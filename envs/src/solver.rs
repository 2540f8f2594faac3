//! The exact solver behind the EZPoints / Points24 experts: every ordering of
//! the numbers, every allowed operator and every bracketing, in rational
//! arithmetic. Solutions come out as formula tokens with minimal brackets,
//! ready to be played one action at a time.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::formula::{Rat, Token};

/// Binary operators the solver may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
        }
    }
    fn precedence(self) -> u8 {
        match self {
            Op::Add | Op::Sub => 1,
            Op::Mul | Op::Div => 2,
        }
    }
    fn apply(self, a: Rat, b: Rat) -> Option<Rat> {
        match self {
            Op::Add => a.checked_add(b),
            Op::Sub => a.checked_sub(b),
            Op::Mul => a.checked_mul(b),
            Op::Div if b.n == 0 => None,
            Op::Div => a.checked_div(b),
        }
    }
}

/// A partial expression: its value, its tokens and the precedence of its
/// top operator (3 for a single number).
#[derive(Clone)]
struct Item {
    value: Rat,
    tokens: Vec<Token>,
    prec: u8,
}

fn push_wrapped(out: &mut Vec<Token>, t: &[Token], wrap: bool) {
    if wrap {
        out.push(Token::Sym("("));
    }
    out.extend_from_slice(t);
    if wrap {
        out.push(Token::Sym(")"));
    }
}

fn combine(a: &Item, b: &Item, op: Op) -> Option<Item> {
    let value = op.apply(a.value, b.value)?;
    let p = op.precedence();
    let wrap_left = a.prec < p;
    // a - (b - c) and a / (b * c) need the brackets; a + (b + c) does not.
    let wrap_right = b.prec < p || (b.prec == p && matches!(op, Op::Sub | Op::Div));
    let mut tokens = Vec::with_capacity(a.tokens.len() + b.tokens.len() + 5);
    push_wrapped(&mut tokens, &a.tokens, wrap_left);
    tokens.push(Token::Sym(op.symbol()));
    push_wrapped(&mut tokens, &b.tokens, wrap_right);
    Some(Item {
        value,
        tokens,
        prec: p,
    })
}

fn search(items: &[Item], ops: &[Op], target: Rat, out: &mut Vec<Vec<Token>>, first_only: bool) {
    if first_only && !out.is_empty() {
        return;
    }
    if items.len() == 1 {
        if items[0].value == target {
            out.push(items[0].tokens.clone());
        }
        return;
    }
    let n = items.len();
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            for &op in ops {
                let Some(c) = combine(&items[i], &items[j], op) else {
                    continue;
                };
                let mut rest: Vec<Item> = items
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != i && k != j)
                    .map(|(_, it)| it.clone())
                    .collect();
                rest.push(c);
                search(&rest, ops, target, out, first_only);
                if first_only && !out.is_empty() {
                    return;
                }
            }
        }
    }
}

fn leaves(numbers: &[i64]) -> Vec<Item> {
    numbers
        .iter()
        .map(|&v| Item {
            value: Rat::int(v as i128),
            tokens: vec![Token::Num(v)],
            prec: 3,
        })
        .collect()
}

/// One solution using every number exactly once, or None.
///
/// Memoized on the sorted numbers: a deal's solution does not depend on the
/// order of its cards, and there are few distinct deals (715 multisets of
/// four values in 1..=10), so after warm-up the expert costs a lookup.
pub fn solve(numbers: &[i64], ops: &[Op], target: i64) -> Option<Vec<Token>> {
    type Key = (Vec<i64>, Vec<Op>, i64);
    static CACHE: OnceLock<Mutex<HashMap<Key, Option<Vec<Token>>>>> = OnceLock::new();
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    let key = (sorted, ops.to_vec(), target);
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return hit.clone();
    }
    let mut out = Vec::new();
    search(
        &leaves(&key.0),
        ops,
        Rat::int(target as i128),
        &mut out,
        true,
    );
    let found = out.pop();
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() < 100_000 {
        map.insert(key, found.clone());
    }
    found
}

/// Every solution the search finds (with repeats across orderings).
pub fn all_solutions(numbers: &[i64], ops: &[Op], target: i64) -> Vec<Vec<Token>> {
    let mut out = Vec::new();
    search(
        &leaves(numbers),
        ops,
        Rat::int(target as i128),
        &mut out,
        false,
    );
    out
}

/// A solution that starts with `prefix` (the formula typed so far), if any.
pub fn solve_from(
    numbers: &[i64],
    ops: &[Op],
    target: i64,
    prefix: &[Token],
) -> Option<Vec<Token>> {
    if prefix.is_empty() {
        return solve(numbers, ops, target);
    }
    all_solutions(numbers, ops, target)
        .into_iter()
        .find(|s| s.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formula::equals;

    const ALL: [Op; 4] = [Op::Add, Op::Sub, Op::Mul, Op::Div];

    #[test]
    fn finds_the_classic_hard_deals() {
        let s = solve(&[8, 3, 8, 3], &ALL, 24).expect("8 3 8 3 is solvable");
        assert!(equals(&s, 24), "{s:?}");
        let s = solve(&[1, 5, 5, 5], &ALL, 24).expect("1 5 5 5 is solvable");
        assert!(equals(&s, 24));
        assert!(solve(&[1, 1, 1, 1], &ALL, 24).is_none());
        assert!(solve(&[1, 1, 1, 2], &ALL, 24).is_none());
    }

    #[test]
    fn every_solution_evaluates_to_the_target() {
        for nums in [[4, 7, 8, 8], [3, 3, 8, 8], [10, 10, 4, 4], [2, 3, 4, 6]] {
            let sols = all_solutions(&nums, &ALL, 24);
            assert!(!sols.is_empty());
            for s in sols {
                assert!(equals(&s, 24), "{s:?}");
            }
        }
    }

    #[test]
    fn prefix_search() {
        let prefix = [Token::Num(8), Token::Sym("/")];
        let s = solve_from(&[3, 3, 8, 8], &ALL, 24, &prefix).unwrap();
        assert!(s.starts_with(&prefix) && equals(&s, 24));
        assert!(solve_from(&[3, 3, 8, 8], &ALL, 24, &[Token::Num(3), Token::Sym("+")]).is_none());
    }
}
