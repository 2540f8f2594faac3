//! Evaluating a card-game formula exactly as gym_cards does, but exactly.
//!
//! gym_cards joins the formula tokens into one string and calls Python's
//! `eval` on it. We parse the same string with the same grammar (integer
//! literals made of adjacent digit tokens, unary +/-, `**`, `*`, `/`, `//`,
//! `+`, `-`, parentheses, spaces as separators), so every formula that
//! Python accepts is accepted here and every one it rejects is rejected.
//! By default arithmetic is exact (rationals), where Python uses floats, so
//! `8/(3-8/3)` equals 24 here and 23.999999999999996 there; the games'
//! `scoring="python"` kwarg scores with Python's ints and floats instead
//! ([`equals_python`]). Irrational powers (`9**(1/2)` is exact, `2**(1/2)` is not) fall
//! back to floats as in Python; complex intermediate results and results
//! beyond 128-bit rationals count as invalid formulas.

use std::fmt;

/// One formula token: a number played from a card, or an operator / space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Num(i64),
    Sym(&'static str),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Num(n) => write!(f, "{n}"),
            Token::Sym(s) => f.write_str(s),
        }
    }
}

/// The string gym_cards passes to `eval`: the tokens joined without separator.
pub fn joined(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.to_string()).collect()
}

/// An exact rational with a positive denominator, in lowest terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rat {
    pub n: i128,
    pub d: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rat {
    pub fn int(n: i128) -> Rat {
        Rat { n, d: 1 }
    }
    /// n/d in lowest terms; None when d == 0 or on overflow.
    pub fn new(n: i128, d: i128) -> Option<Rat> {
        if d == 0 {
            return None;
        }
        let g = gcd(n, d).max(1);
        let (mut n, mut d) = (n / g, d / g);
        if d < 0 {
            n = n.checked_neg()?;
            d = d.checked_neg()?;
        }
        Some(Rat { n, d })
    }
    pub fn checked_add(self, o: Rat) -> Option<Rat> {
        Rat::new(
            self.n
                .checked_mul(o.d)?
                .checked_add(o.n.checked_mul(self.d)?)?,
            self.d.checked_mul(o.d)?,
        )
    }
    pub fn checked_sub(self, o: Rat) -> Option<Rat> {
        self.checked_add(Rat {
            n: o.n.checked_neg()?,
            d: o.d,
        })
    }
    pub fn checked_mul(self, o: Rat) -> Option<Rat> {
        Rat::new(self.n.checked_mul(o.n)?, self.d.checked_mul(o.d)?)
    }
    pub fn checked_div(self, o: Rat) -> Option<Rat> {
        Rat::new(self.n.checked_mul(o.d)?, self.d.checked_mul(o.n)?)
    }
    pub fn is_int(self) -> bool {
        self.d == 1
    }
    fn to_f64(self) -> f64 {
        self.n as f64 / self.d as f64
    }
    fn floor(self) -> i128 {
        self.n.div_euclid(self.d)
    }
    fn pow_int(self, k: i128) -> Option<Rat> {
        let e = u32::try_from(k.unsigned_abs()).ok()?;
        let (n, d) = (self.n.checked_pow(e)?, self.d.checked_pow(e)?);
        if k >= 0 {
            Rat::new(n, d)
        } else {
            Rat::new(d, n)
        }
    }
}

/// A value during evaluation: exact, or a float after an irrational power.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Exact(Rat),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Exact(r) => r.to_f64(),
            Num::Float(x) => x,
        }
    }
}

/// Why a formula has no value (all count as "invalid formula": reward -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    Syntax,
    ZeroDivision,
    /// Too large for 128-bit rationals, or a complex result.
    Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Lex {
    Int(i128),
    Op(&'static str),
}

fn lex(s: &str) -> Result<Vec<Lex>, EvalError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b' ' || c == b'\t' {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let lit = &s[start..i];
            // Python rejects decimal literals with leading zeros ("07").
            if lit.len() > 1 && lit.starts_with('0') && lit.bytes().any(|d| d != b'0') {
                return Err(EvalError::Syntax);
            }
            out.push(Lex::Int(lit.parse().map_err(|_| EvalError::Unsupported)?));
        } else {
            let two = if i + 1 < b.len() { &s[i..i + 2] } else { "" };
            let op = match (two, c) {
                ("**", _) => "**",
                ("//", _) => "//",
                (_, b'+') => "+",
                (_, b'-') => "-",
                (_, b'*') => "*",
                (_, b'/') => "/",
                (_, b'(') => "(",
                (_, b')') => ")",
                _ => return Err(EvalError::Syntax),
            };
            i += op.len();
            out.push(Lex::Op(op));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Lex>,
    pos: usize,
    /// Python's own number types (int, float) instead of exact rationals.
    python_floats: bool,
}

impl Parser {
    fn peek(&self) -> Option<Lex> {
        self.toks.get(self.pos).copied()
    }
    fn eat(&mut self, op: &str) -> bool {
        let hit = matches!(self.peek(), Some(Lex::Op(o)) if o == op);
        self.pos += hit as usize;
        hit
    }
    fn expr(&mut self) -> Result<Num, EvalError> {
        let mut v = self.term()?;
        loop {
            if self.eat("+") {
                v = arith_in(self.python_floats, v, self.term()?, '+')?;
            } else if self.eat("-") {
                v = arith_in(self.python_floats, v, self.term()?, '-')?;
            } else {
                return Ok(v);
            }
        }
    }
    fn term(&mut self) -> Result<Num, EvalError> {
        let mut v = self.factor()?;
        loop {
            if self.eat("*") {
                v = arith_in(self.python_floats, v, self.factor()?, '*')?;
            } else if self.eat("/") {
                v = arith_in(self.python_floats, v, self.factor()?, '/')?;
            } else if self.eat("//") {
                v = arith_in(self.python_floats, v, self.factor()?, 'f')?;
            } else {
                return Ok(v);
            }
        }
    }
    fn factor(&mut self) -> Result<Num, EvalError> {
        if self.eat("+") {
            self.factor()
        } else if self.eat("-") {
            let v = self.factor()?;
            arith_in(self.python_floats, Num::Exact(Rat::int(0)), v, '-')
        } else {
            self.power()
        }
    }
    fn power(&mut self) -> Result<Num, EvalError> {
        let base = self.atom()?;
        if self.eat("**") {
            let exp = self.factor()?;
            return if self.python_floats {
                python::power(base, exp)
            } else {
                power(base, exp)
            };
        }
        Ok(base)
    }
    fn atom(&mut self) -> Result<Num, EvalError> {
        match self.peek() {
            Some(Lex::Int(n)) => {
                self.pos += 1;
                Ok(Num::Exact(Rat::int(n)))
            }
            Some(Lex::Op("(")) => {
                self.pos += 1;
                let v = self.expr()?;
                if !self.eat(")") {
                    return Err(EvalError::Syntax);
                }
                Ok(v)
            }
            _ => Err(EvalError::Syntax),
        }
    }
}

/// `a op b` with exact rationals, or with Python's number types.
fn arith_in(python_floats: bool, a: Num, b: Num, op: char) -> Result<Num, EvalError> {
    if python_floats {
        python::arith(a, b, op)
    } else {
        arith(a, b, op)
    }
}

fn arith(a: Num, b: Num, op: char) -> Result<Num, EvalError> {
    if let (Num::Exact(x), Num::Exact(y)) = (a, b) {
        let r = match op {
            '+' => x.checked_add(y),
            '-' => x.checked_sub(y),
            '*' => x.checked_mul(y),
            _ if y.n == 0 => return Err(EvalError::ZeroDivision),
            '/' => x.checked_div(y),
            _ => x.checked_div(y).map(|q| Rat::int(q.floor())),
        };
        return r.map(Num::Exact).ok_or(EvalError::Unsupported);
    }
    let (x, y) = (a.f(), b.f());
    let r = match op {
        '+' => x + y,
        '-' => x - y,
        '*' => x * y,
        _ if y == 0.0 => return Err(EvalError::ZeroDivision),
        '/' => x / y,
        _ => (x / y).floor(),
    };
    if r.is_finite() {
        Ok(Num::Float(r))
    } else {
        Err(EvalError::Unsupported)
    }
}

fn int_root(x: i128, q: u32) -> Option<i128> {
    // x >= 0; the exact q-th root if there is one.
    let guess = (x as f64).powf(1.0 / q as f64).round() as i128;
    (guess.saturating_sub(1)..=guess + 1).find(|&r| r >= 0 && r.checked_pow(q) == Some(x))
}

fn power(base: Num, exp: Num) -> Result<Num, EvalError> {
    if let (Num::Exact(b), Num::Exact(e)) = (base, exp) {
        if b.n == 0 && e.n < 0 {
            return Err(EvalError::ZeroDivision);
        }
        if e.is_int() {
            if b.n.abs() == b.d {
                // (+-1)**k never overflows, whatever k.
                let odd = e.n % 2 != 0;
                return Ok(Num::Exact(Rat::int(if b.n < 0 && odd { -1 } else { 1 })));
            }
            return b.pow_int(e.n).map(Num::Exact).ok_or(EvalError::Unsupported);
        }
        if b.n < 0 {
            return Err(EvalError::Unsupported); // complex in Python
        }
        if let Ok(q) = u32::try_from(e.d) {
            if let (Some(rn), Some(rd)) = (int_root(b.n, q), int_root(b.d, q)) {
                return Rat { n: rn, d: rd }
                    .pow_int(e.n)
                    .map(Num::Exact)
                    .ok_or(EvalError::Unsupported);
            }
        }
    }
    let (b, e) = (base.f(), exp.f());
    if b == 0.0 && e < 0.0 {
        return Err(EvalError::ZeroDivision);
    }
    if b < 0.0 && e.fract() != 0.0 {
        return Err(EvalError::Unsupported);
    }
    let r = b.powf(e);
    if r.is_finite() {
        Ok(Num::Float(r))
    } else {
        Err(EvalError::Unsupported)
    }
}

/// Whether the formula evaluates to `target` (Python `eval(...) == target`,
/// with exact arithmetic). Invalid formulas are not equal to anything.
pub fn equals(tokens: &[Token], target: i64) -> bool {
    evaluate(&joined(tokens), false).is_ok_and(|v| v.equals(target))
}

/// Whether the formula evaluates to `target` under Python's own number
/// types, as gym_cards scores it: ints stay exact, `/` gives a float, float
/// `//` is Python's floor division (`5/2//(1/10)` is 24.0). The one limit
/// kept: an integer beyond 128 bits (`9**9**9`, which Python would spend
/// minutes computing) counts as an invalid formula at once.
pub fn equals_python(tokens: &[Token], target: i64) -> bool {
    evaluate(&joined(tokens), true).is_ok_and(|v| v.equals(target))
}

impl Num {
    fn equals(self, target: i64) -> bool {
        match self {
            Num::Exact(r) => r == Rat::int(target as i128),
            Num::Float(x) => x == target as f64,
        }
    }
}

/// Evaluates a formula string, exactly or with Python's number types.
fn evaluate(s: &str, python_floats: bool) -> Result<Num, EvalError> {
    let toks = lex(s)?;
    let mut p = Parser {
        toks,
        pos: 0,
        python_floats,
    };
    let v = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(EvalError::Syntax);
    }
    Ok(v)
}

/// Python's arithmetic on ints (kept as integer `Rat`s) and floats.
mod python {
    use super::{EvalError, Num, Rat};

    fn float(r: f64) -> Result<Num, EvalError> {
        if r.is_finite() {
            Ok(Num::Float(r))
        } else {
            Err(EvalError::Unsupported) // OverflowError, or inf: never the target
        }
    }

    /// Python's float `//`: floor of the exact quotient, via fmod as CPython does.
    fn floor_div(x: f64, y: f64) -> f64 {
        let m = x % y;
        let mut div = (x - m) / y;
        if m != 0.0 && ((y < 0.0) != (m < 0.0)) {
            div -= 1.0;
        }
        if div == 0.0 {
            return 0.0f64.copysign(x / y);
        }
        let f = div.floor();
        if div - f > 0.5 {
            f + 1.0
        } else {
            f
        }
    }

    pub(super) fn arith(a: Num, b: Num, op: char) -> Result<Num, EvalError> {
        if let (Num::Exact(x), Num::Exact(y)) = (a, b) {
            // Both Python ints (no exact fractions arise on this path).
            let r = match op {
                '+' => x.checked_add(y),
                '-' => x.checked_sub(y),
                '*' => x.checked_mul(y),
                _ if y.n == 0 => return Err(EvalError::ZeroDivision),
                '/' => return float(x.n as f64 / y.n as f64),
                _ => x.checked_div(y).map(|q| Rat::int(q.floor())),
            };
            return r.map(Num::Exact).ok_or(EvalError::Unsupported);
        }
        let (x, y) = (a.f(), b.f());
        match op {
            '+' => float(x + y),
            '-' => float(x - y),
            '*' => float(x * y),
            _ if y == 0.0 => Err(EvalError::ZeroDivision),
            '/' => float(x / y),
            _ => float(floor_div(x, y)),
        }
    }

    pub(super) fn power(base: Num, exp: Num) -> Result<Num, EvalError> {
        if let (Num::Exact(b), Num::Exact(e)) = (base, exp) {
            if b.n == 0 && e.n < 0 {
                return Err(EvalError::ZeroDivision);
            }
            if e.n < 0 {
                return float((b.n as f64).powf(e.n as f64)); // int ** -int is a float
            }
            if b.n.abs() <= 1 {
                // 0, 1 and -1 to any power, without computing it.
                let v = if b.n == 0 {
                    (e.n == 0) as i128
                } else if b.n < 0 && e.n % 2 != 0 {
                    -1
                } else {
                    1
                };
                return Ok(Num::Exact(Rat::int(v)));
            }
            return b.pow_int(e.n).map(Num::Exact).ok_or(EvalError::Unsupported);
        }
        let (b, e) = (base.f(), exp.f());
        if b == 0.0 && e < 0.0 {
            return Err(EvalError::ZeroDivision);
        }
        if b < 0.0 && e.fract() != 0.0 {
            return Err(EvalError::Unsupported); // complex in Python: never equal
        }
        float(b.powf(e))
    }
}

/// The exact value of a formula string, or why it has none (floats are
/// reported as their nearest rational only when they are integers).
pub fn value(s: &str) -> Result<Rat, EvalError> {
    match evaluate(s, false)? {
        Num::Exact(r) => Ok(r),
        Num::Float(x) if x.fract() == 0.0 && x.abs() < 1e30 => Ok(Rat::int(x as i128)),
        Num::Float(_) => Err(EvalError::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Result<Rat, EvalError> {
        value(s)
    }

    #[test]
    fn python_grammar() {
        assert_eq!(v("10+2"), Ok(Rat::int(12)));
        assert_eq!(v("2+3*4"), Ok(Rat::int(14)));
        assert_eq!(v("(2+3)*4"), Ok(Rat::int(20)));
        assert_eq!(
            v("24"),
            Ok(Rat::int(24)),
            "adjacent digit tokens concatenate as in eval"
        );
        assert_eq!(v("2 4"), Err(EvalError::Syntax));
        assert_eq!(v(" 3 * 8 "), Ok(Rat::int(24)));
        assert_eq!(v("-2**2"), Ok(Rat::int(-4)));
        assert_eq!(v("2**3**2"), Ok(Rat::int(512)));
        assert_eq!(v("2**-1"), Ok(Rat::new(1, 2).unwrap()));
        assert_eq!(v("7//2"), Ok(Rat::int(3)));
        assert_eq!(v("-7//2"), Ok(Rat::int(-4)));
        assert_eq!(v("--3+-+1"), Ok(Rat::int(2)));
        assert_eq!(v("9**(1/2)*8"), Ok(Rat::int(24)));
        for bad in [
            "10+", "()", "(2)(3)", "2(3)", "2***3", "", "+", "(1+2", "1+2)", "*3",
        ] {
            assert!(v(bad).is_err(), "{bad:?} should be invalid");
        }
        assert_eq!(v("1/(3-3)"), Err(EvalError::ZeroDivision));
        assert_eq!(v("10**10**10"), Err(EvalError::Unsupported));
        assert_eq!(v("1**(10**10**10)"), Err(EvalError::Unsupported));
    }

    #[test]
    fn exact_where_floats_miss() {
        let f = [
            Token::Num(8),
            Token::Sym("/"),
            Token::Sym("("),
            Token::Num(3),
            Token::Sym("-"),
            Token::Num(8),
            Token::Sym("/"),
            Token::Num(3),
            Token::Sym(")"),
        ];
        assert_eq!(joined(&f), "8/(3-8/3)");
        assert!(equals(&f, 24));
        assert!(!equals(&f, 23));
        assert!(!equals_python(&f, 24), "23.999999999999996 in Python");
    }

    fn py(s: &str) -> Result<Num, EvalError> {
        evaluate(s, true)
    }

    #[test]
    fn python_number_types() {
        // Values as CPython prints them for eval(s).
        assert_eq!(py("2/5*6*10"), Ok(Num::Float(24.000000000000004)));
        assert_eq!(py("5/2//(1/10)"), Ok(Num::Float(24.0)));
        assert_eq!(py("7//2"), Ok(Num::Exact(Rat::int(3))));
        assert_eq!(py("-7//2"), Ok(Num::Exact(Rat::int(-4))));
        assert_eq!(py("(0-15/2)//2"), Ok(Num::Float(-4.0)));
        assert_eq!(py("1/3//(1/3)"), Ok(Num::Float(1.0)));
        assert_eq!(py("6/4"), Ok(Num::Float(1.5)));
        assert_eq!(py("2**-1"), Ok(Num::Float(0.5)));
        assert_eq!(py("9**(1/2)"), Ok(Num::Float(3.0)));
        assert_eq!(py("0**0"), Ok(Num::Exact(Rat::int(1))));
        assert_eq!(py("1/(3-3)"), Err(EvalError::ZeroDivision));
        assert_eq!(py("8/0//1"), Err(EvalError::ZeroDivision));
        assert_eq!(py("(1-2)**(1/2)"), Err(EvalError::Unsupported));
        let toks = |s: &str| -> Vec<Token> {
            s.chars()
                .map(|c| match c.to_digit(10) {
                    Some(d) => Token::Num(d as i64),
                    None => Token::Sym(match c {
                        '+' => "+",
                        '-' => "-",
                        '*' => "*",
                        '/' => "/",
                        '(' => "(",
                        _ => ")",
                    }),
                })
                .collect()
        };
        assert!(equals(&toks("2/5*6*(9+1)"), 24));
        assert!(!equals_python(&toks("2/5*6*(9+1)"), 24));
        assert!(!equals(&toks("5/2//(1/(9+1))"), 24));
        assert!(equals_python(&toks("5/2//(1/(9+1))"), 24));
    }

    #[test]
    fn power_towers_return_at_once() {
        let t0 = std::time::Instant::now();
        for s in [
            "9**9**9",
            "10**10**10",
            "8**8**8**8",
            "(9**9**9)//(9**9**9)",
        ] {
            assert_eq!(v(s), Err(EvalError::Unsupported), "{s}");
            assert_eq!(py(s), Err(EvalError::Unsupported), "{s}");
        }
        assert_eq!(
            py("1**9**9**9"),
            Err(EvalError::Unsupported),
            "9**9**9 first"
        );
        assert_eq!(py("1**(9**9)"), Ok(Num::Exact(Rat::int(1))));
        assert_eq!(py("(0-1)**(9**9)"), Ok(Num::Exact(Rat::int(-1))));
        assert!(t0.elapsed().as_millis() < 100, "{:?}", t0.elapsed());
    }
}
