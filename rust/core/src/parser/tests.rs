use super::*;

fn vocab(names: &[&str]) -> Vocab {
    Vocab::new(names).unwrap()
}

fn parse(text: &str, v: &Vocab) -> Parsed {
    parse_action(text, v, &mut Scratch::default())
}

/// Python-style slice by code points.
fn slice(text: &str, s: i64, e: i64) -> String {
    text.chars()
        .skip(s as usize)
        .take((e - s) as usize)
        .collect()
}

const BLACKJACK: &[&str] = &["stand", "hit"];
const POINTS24: &[&str] = &[
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "+", "-", "*", "/", "(", ")", "=",
];

#[test]
fn quoted_key_and_value() {
    let v = vocab(BLACKJACK);
    let t = r#"{"thoughts": "I have 12", "action": "hit"}"#;
    let p = parse(t, &v);
    assert_eq!(p.index, 1);
    assert_eq!(p.key_start, t.find("\"action").unwrap() as i64);
    assert_eq!(slice(t, p.value_start, p.value_end), "hit");
}

#[test]
fn last_key_wins_and_unquoted_forms() {
    let v = vocab(BLACKJACK);
    assert_eq!(parse("action: stand\nAction: HIT", &v).index, 1);
    assert_eq!(parse("'action' : 'stand',", &v).index, 0);
    assert_eq!(parse(r#"{"action": ["hit"]}"#, &v).index, 1);
    assert_eq!(parse(r#"{"action": ["hit", "stand"]}"#, &v).index, -1);
    assert_eq!(parse(r#"{"action": ["hit", ]}"#, &v).index, 1);
    // "reaction:" and `next action":` are not action keys.
    assert_eq!(parse("reaction: hit", &v), Parsed::NONE);
    assert_eq!(parse(r#"{"next action": "hit"}"#, &v), Parsed::NONE);
}

#[test]
fn token_rule_boundaries_and_longest_name() {
    let v = vocab(BLACKJACK);
    assert_eq!(parse(r#""action": "white""#, &v).index, -1);
    assert_eq!(parse(r#""action": "stands""#, &v).index, -1);
    assert_eq!(parse(r#""action": "I will hit!""#, &v).index, 1);
    assert_eq!(parse(r#""action": "hit or stand""#, &v).index, -1);
    assert_eq!(parse(r#""action": "hit, hit""#, &v).index, 1);
    let p = vocab(POINTS24);
    assert_eq!(parse(r#""action": 10"#, &p).index, 9);
    assert_eq!(parse(r#""action": "10 please""#, &p).index, 9);
    assert_eq!(parse(r#""action": "110""#, &p).index, -1);
    assert_eq!(parse(r#""action": "(10""#, &p).index, -1);
}

#[test]
fn alfworld_whitespace_and_period() {
    let v = vocab(&[
        "go to cabinet 1",
        "go to cabinet 10",
        "take apple 1 from countertop 2",
    ]);
    assert_eq!(
        parse(r#""action": "Take  apple 1 from countertop 2.""#, &v).index,
        2
    );
    assert_eq!(parse(r#""action": "go to cabinet 10""#, &v).index, 1);
    assert_eq!(parse(r#""action": "I go to cabinet 1 now""#, &v).index, 0);
    assert_eq!(parse(r#""action": "go to cabinet""#, &v).index, -1);
}

#[test]
fn offsets_count_code_points() {
    let v = vocab(BLACKJACK);
    let t = "{\"thoughts\": \"ß über 😀\", \"action\": \"hit\"}";
    let p = parse(t, &v);
    let key = t.chars().collect::<String>().find("\"action").unwrap();
    assert_eq!(p.key_start as usize, t[..key].chars().count());
    assert_eq!(slice(t, p.value_start, p.value_end), "hit");
}

#[test]
fn errors() {
    assert!(matches!(
        Vocab::new(&["hit", "  "]),
        Err(ParserError::EmptyName { index: 1, .. })
    ));
    let v = [vocab(BLACKJACK)];
    let mut out = [Parsed::NONE; 2];
    let r = parse_batch(&["a", "b"], None, Vocabs::PerText(&v), &mut out);
    assert_eq!(
        r,
        Err(ParserError::LengthMismatch {
            texts: 2,
            vocabularies: 1
        })
    );
}

#[test]
fn batch_matches_single_parses() {
    let v = vocab(POINTS24);
    let texts: Vec<String> = (0..2000)
        .map(|i| {
            format!(
                "{{\"thoughts\": \"n{i}{}\", \"action\": \"{}\"}}",
                ["", "é😀"][i % 2],
                i % 12
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let mut out = vec![Parsed::NONE; refs.len()];
    parse_batch(&refs, None, Vocabs::Shared(&v), &mut out).unwrap();
    let ascii: Vec<bool> = refs.iter().map(|t| t.is_ascii()).collect();
    let mut out2 = vec![Parsed::NONE; refs.len()];
    parse_batch(&refs, Some(&ascii), Vocabs::Shared(&v), &mut out2).unwrap();
    assert_eq!(out, out2);
    let n = refs.len();
    let (mut ix, mut va, mut ks, mut sp) = (
        vec![0i64; n],
        vec![false; n],
        vec![0i64; n],
        vec![0i64; 2 * n],
    );
    let soa = BatchOut {
        index: &mut ix,
        valid: &mut va,
        key_start: &mut ks,
        value_span: &mut sp,
    };
    parse_batch_into(&refs, Some(&ascii), Vocabs::Shared(&v), soa).unwrap();
    for (k, o) in out.iter().enumerate() {
        assert_eq!(
            (ix[k], va[k], ks[k], sp[2 * k], sp[2 * k + 1]),
            (o.index, o.valid(), o.key_start, o.value_start, o.value_end)
        );
    }
    for (t, o) in refs.iter().zip(&out) {
        assert_eq!(*o, parse(t, &v));
    }
    assert_eq!(out[3].index, 2);
    assert_eq!(out[0].index, -1); // "0" is not a Points24 action
}

/// A small deterministic generator (xorshift64*) for the fuzz loop.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "\"action\"",
    "'action'",
    "action",
    "ACTION",
    ":",
    " ",
    "\n",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    ",",
    "hit",
    "stand",
    "10",
    "1",
    "+",
    "(",
    "go to cabinet 1",
    ".",
    "\\",
    "```json",
    "<|im_end|>",
    "\u{0}",
    "\u{7}",
    "é",
    "ß",
    "İ",
    "K",
    "😀",
    "\u{2028}",
    "\u{a0}",
    "白",
    "white",
    "stands",
];

fn random_piece(r: &mut Rng, s: &mut String) {
    if r.below(4) == 0 {
        // Any scalar value (char::from_u32 rejects surrogates).
        s.push(char::from_u32(r.below(0x11_0000) as u32).unwrap_or('\u{fffd}'));
    } else {
        s.push_str(PIECES[r.below(PIECES.len())]);
    }
}

/// Random pieces, or a valid answer with random insertions; then maybe a
/// truncation at a random char boundary, as a generation cut off mid-answer.
fn random_text(r: &mut Rng, names: &[&str]) -> String {
    let mut s = String::new();
    if r.below(2) == 0 {
        for _ in 0..r.below(24) {
            random_piece(r, &mut s);
        }
    } else {
        let mut noise = String::new();
        for _ in 0..r.below(6) {
            random_piece(r, &mut noise);
        }
        s = format!(
            "{{\"thoughts\": \"{noise}\", \"action\": \"{}\"}}",
            names[r.below(names.len())]
        );
        for _ in 0..r.below(3) {
            let at = r.below(s.chars().count() + 1);
            let mut piece = String::new();
            random_piece(r, &mut piece);
            let byte = s.char_indices().nth(at).map_or(s.len(), |(b, _)| b);
            s.insert_str(byte, &piece);
        }
    }
    if r.below(3) == 0 {
        let cut = r.below(s.chars().count() + 1);
        s = s.chars().take(cut).collect();
    }
    s
}

#[test]
fn fuzz_never_panics_and_offsets_stay_inside() {
    let lists: [&[&str]; 3] = [
        BLACKJACK,
        POINTS24,
        &["go to cabinet 1", "take apple 1 from countertop 2"],
    ];
    let vocabs = lists.map(vocab);
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut scratch = Scratch::default();
    let mut valid = 0;
    for i in 0..200_000 {
        let t = random_text(&mut r, lists[i % 3]);
        let v = &vocabs[i % 3];
        let p = parse_action(&t, v, &mut scratch);
        let n = t.chars().count() as i64;
        assert!((-1..n).contains(&p.key_start), "{t:?} {p:?}");
        if p.value_start >= 0 {
            assert!(
                p.key_start >= 0
                    && p.key_start < p.value_start
                    && p.value_start < p.value_end
                    && p.value_end <= n
            );
        } else {
            assert_eq!((p.value_end, p.index), (-1, -1));
        }
        if p.valid() {
            valid += 1;
            let mut a = Vec::new();
            let mut b = Vec::new();
            matcher::normalize_into(&slice(&t, p.value_start, p.value_end), &mut a);
            let name = lists[i % 3][p.index as usize];
            matcher::normalize_into(name, &mut b);
            assert!(a.windows(b.len()).any(|w| w == b), "{t:?} {p:?}");
        }
    }
    assert!(
        valid > 30_000,
        "the generator should also produce valid answers ({valid})"
    );
}
