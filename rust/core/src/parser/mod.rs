//! Text-to-action parser: maps a model's free-text answer to an action index.
//!
//! The answer is expected to hold a JSON-like `"action": <value>` pair. We find
//! the **last** action key (case-insensitive; double, single or no quotes, then
//! a colon), read its value (a quoted string, an unquoted run up to `,` `}` or
//! a line end, a number, or a one-element list) and match it against the
//! action names:
//!
//! 1. the trimmed, unquoted, case-folded value equals a name (runs of
//!    whitespace collapsed, so ALFWorld commands with doubled spaces match);
//! 2. else the same after stripping one trailing period;
//! 3. else exactly one action name occurs in the value as a whole token
//!    (names that start/end with a word character need a word boundary there,
//!    symbols stand alone; at each position the longest name wins).
//!
//! Anything else (no key, empty value, no match, two different actions) is
//! invalid. Offsets are reported in Unicode code points so that Python's
//! `text[key_start:]` is right. The parser never panics on any `&str`: every
//! index is derived from bounds-checked scans of the text.

mod matcher;

pub use matcher::Vocab;

use rayon::prelude::*;
use thiserror::Error;

/// Errors of the parser's inputs (the texts themselves can never be wrong).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParserError {
    /// An action name that is empty after trimming would match everything.
    #[error("action name {index} ({name:?}) is empty or only whitespace")]
    EmptyName { index: usize, name: String },
    /// Per-text action-name lists whose count differs from the text count.
    #[error(
        "got {vocabularies} action-name lists for {texts} texts; pass one list for all texts or exactly one per text"
    )]
    LengthMismatch { texts: usize, vocabularies: usize },
}

/// The parse of one answer. Offsets are code-point offsets into the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Index of the matched action name, -1 when the answer is invalid.
    pub index: i64,
    /// Offset of the action key (its opening quote, or the `a` when
    /// unquoted), -1 when the text has no action key.
    pub key_start: i64,
    /// Start of the trimmed, unquoted action value, -1 when there is none.
    pub value_start: i64,
    /// End (exclusive) of the action value, -1 when there is none.
    pub value_end: i64,
}

impl Parsed {
    /// The parse of a text without an action key.
    pub const NONE: Parsed = Parsed {
        index: -1,
        key_start: -1,
        value_start: -1,
        value_end: -1,
    };

    /// Whether the answer named exactly one action.
    pub fn valid(&self) -> bool {
        self.index >= 0
    }
}

/// Which vocabulary each text of a batch is matched against.
#[derive(Clone, Copy)]
pub enum Vocabs<'a> {
    /// One vocabulary for every text (the card games).
    Shared(&'a Vocab),
    /// One vocabulary per text (ALFWorld's admissible commands).
    PerText(&'a [Vocab]),
}

/// Reusable per-thread buffers, so that a batch allocates once per chunk.
#[derive(Default)]
pub struct Scratch {
    value: Vec<char>,
}

/// Batches smaller than this are parsed on the calling thread: spreading a
/// few dozen answers over the pool costs more than parsing them.
const PARALLEL_MIN: usize = 512;
const CHUNK: usize = 256;

/// Parse one answer against one vocabulary.
pub fn parse_action(text: &str, vocab: &Vocab, scratch: &mut Scratch) -> Parsed {
    parse_text(text, false, vocab, scratch)
}

/// Parse one answer; `ascii` may be true only when the text is pure ASCII
/// (then byte offsets are code-point offsets and need no counting; Python
/// knows this for free from the str's length).
fn parse_text(text: &str, ascii: bool, vocab: &Vocab, scratch: &mut Scratch) -> Parsed {
    let Some((key_byte, after_colon)) = find_key(text) else {
        return Parsed::NONE;
    };
    let offset = |b: usize| {
        if ascii {
            b
        } else {
            char_count(&text.as_bytes()[..b])
        }
    };
    let key_start = offset(key_byte) as i64;
    let Some((vs, ve)) = value_bounds(text, after_colon) else {
        return Parsed {
            key_start,
            ..Parsed::NONE
        };
    };
    let value_start = offset(vs);
    let value_end = value_start
        + if ascii {
            ve - vs
        } else {
            char_count(&text.as_bytes()[vs..ve])
        };
    Parsed {
        index: vocab.match_value(&text[vs..ve], &mut scratch.value),
        key_start,
        value_start: value_start as i64,
        value_end: value_end as i64,
    }
}

/// Struct-of-arrays output of [`parse_batch_into`] (e.g. numpy buffers),
/// one entry per text; `value_span` holds (start, end) pairs, 2 per text.
pub struct BatchOut<'a> {
    pub index: &'a mut [i64],
    pub valid: &'a mut [bool],
    pub key_start: &'a mut [i64],
    pub value_span: &'a mut [i64],
}

/// Parses texts `base..base + n` in order, handing each result to `emit`
/// (with its position in the chunk).
fn run_chunk(
    texts: &[&str],
    ascii: Option<&[bool]>,
    vocabs: Vocabs<'_>,
    base: usize,
    n: usize,
    mut emit: impl FnMut(usize, Parsed),
) {
    let mut scratch = Scratch::default();
    for k in 0..n {
        let i = base + k;
        if let Some(t) = texts.get(i + PREFETCH_AHEAD) {
            prefetch_tail(t);
        }
        let vocab = match vocabs {
            Vocabs::Shared(v) => v,
            Vocabs::PerText(v) => &v[i],
        };
        emit(
            k,
            parse_text(texts[i], ascii.is_some_and(|a| a[i]), vocab, &mut scratch),
        );
    }
}

fn check_batch(
    texts: &[&str],
    ascii: Option<&[bool]>,
    vocabs: Vocabs<'_>,
) -> Result<(), ParserError> {
    if let Vocabs::PerText(v) = vocabs {
        if v.len() != texts.len() {
            return Err(ParserError::LengthMismatch {
                texts: texts.len(),
                vocabularies: v.len(),
            });
        }
    }
    assert!(
        ascii.is_none_or(|a| a.len() == texts.len()),
        "one ascii flag per text"
    );
    Ok(())
}

/// Parse a batch of answers in parallel (rayon) into `out`. `ascii`, when
/// given, flags the texts known to be pure ASCII (see `parse_text`); a wrong
/// flag gives wrong offsets but never reads outside a text.
pub fn parse_batch(
    texts: &[&str],
    ascii: Option<&[bool]>,
    vocabs: Vocabs<'_>,
    out: &mut [Parsed],
) -> Result<(), ParserError> {
    check_batch(texts, ascii, vocabs)?;
    assert_eq!(
        texts.len(),
        out.len(),
        "output buffer must have one slot per text"
    );
    let run = |base: usize, o: &mut [Parsed]| {
        run_chunk(texts, ascii, vocabs, base, o.len(), |k, p| o[k] = p)
    };
    if texts.len() < PARALLEL_MIN {
        run(0, out);
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, o)| run(c * CHUNK, o));
    }
    Ok(())
}

/// [`parse_batch`] writing straight into struct-of-arrays buffers (the
/// binding's numpy arrays), with no intermediate copy.
pub fn parse_batch_into(
    texts: &[&str],
    ascii: Option<&[bool]>,
    vocabs: Vocabs<'_>,
    out: BatchOut<'_>,
) -> Result<(), ParserError> {
    check_batch(texts, ascii, vocabs)?;
    let n = texts.len();
    assert!(
        out.index.len() == n
            && out.valid.len() == n
            && out.key_start.len() == n
            && out.value_span.len() == 2 * n,
        "output buffers must have one slot per text (two for value_span)"
    );
    let run = |base: usize, ix: &mut [i64], va: &mut [bool], ks: &mut [i64], sp: &mut [i64]| {
        run_chunk(texts, ascii, vocabs, base, ix.len(), |k, p| {
            ix[k] = p.index;
            va[k] = p.valid();
            ks[k] = p.key_start;
            sp[2 * k] = p.value_start;
            sp[2 * k + 1] = p.value_end;
        })
    };
    if n < PARALLEL_MIN {
        run(0, out.index, out.valid, out.key_start, out.value_span);
    } else {
        out.index
            .par_chunks_mut(CHUNK)
            .zip(out.valid.par_chunks_mut(CHUNK))
            .zip(out.key_start.par_chunks_mut(CHUNK))
            .zip(out.value_span.par_chunks_mut(2 * CHUNK))
            .enumerate()
            .for_each(|(c, (((ix, va), ks), sp))| run(c * CHUNK, ix, va, ks, sp));
    }
    Ok(())
}

/// How many texts ahead the tail of a text is prefetched: the search for the
/// key starts at the end of each text, which is a cache miss in a large batch.
const PREFETCH_AHEAD: usize = 4;

#[inline(always)]
fn prefetch_tail(t: &str) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = t.as_ptr().wrapping_add(t.len().saturating_sub(32)) as *const i8;
        // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = t;
}

/// Code points in a UTF-8 byte slice: bytes that are not continuation bytes
/// (written so that it vectorizes).
fn char_count(b: &[u8]) -> usize {
    b.iter().filter(|&&c| (c as i8) >= -0x40).count()
}

fn is_quote(b: u8) -> bool {
    b == b'"' || b == b'\''
}

/// Word characters for key and name boundaries: Unicode letters and digits, `_`.
pub(crate) fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Locate the last action key: returns (byte offset of the key start, byte
/// offset just past its colon).
fn find_key(text: &str) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut i = b.len().checked_sub(7)?; // "action:" is the shortest key
    loop {
        // An ASCII byte is always a char boundary, so slicing at i is safe.
        if b[i] | 0x20 == b'a' && b[i..i + 6].eq_ignore_ascii_case(b"action") {
            if let Some(found) = check_key(text, i) {
                return Some(found);
            }
        }
        if i == 0 {
            return None;
        }
        i -= 1;
    }
}

/// Is the word `action` at byte `i` a key? Quoted keys may use either quote
/// kind; an unquoted key needs a word boundary before it, and a closing quote
/// without an opening one (`next action":`) belongs to another key.
fn check_key(text: &str, i: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let opened = i > 0 && is_quote(b[i - 1]);
    if !opened && text[..i].chars().next_back().is_some_and(is_word) {
        return None;
    }
    let mut j = i + 6;
    if j < b.len() && is_quote(b[j]) {
        if !opened {
            return None;
        }
        j += 1;
    }
    while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
        j += 1;
    }
    (j < b.len() && b[j] == b':').then(|| (if opened { i - 1 } else { i }, j + 1))
}

/// Byte bounds of the trimmed value that follows the colon at `p`, or None
/// when the value is empty.
fn value_bounds(text: &str, mut p: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let n = b.len();
    // Leading whitespace and control characters, line breaks included:
    // `"action":\n  "hit"` is pretty-printed JSON.
    while p < n && b[p] <= b' ' {
        p += 1;
    }
    if p == n {
        return None;
    }
    let (s, e) = if is_quote(b[p]) {
        quoted(b, p).0
    } else if b[p] == b'[' {
        list_value(b, p + 1)
    } else {
        (p, scan_until(b, p, b",}\n\r"))
    };
    trim_value(text, s, e)
}

/// Byte index of the first byte of `stops` at or after `p` (or `n`).
fn scan_until(b: &[u8], p: usize, stops: &[u8]) -> usize {
    b[p..]
        .iter()
        .position(|c| stops.contains(c))
        .map_or(b.len(), |k| p + k)
}

/// A quoted string starting at the quote at `p`: returns the content bounds
/// and the index after the closing quote. Backslash escapes are skipped; an
/// unterminated string ends at the line end or the end of the text.
fn quoted(b: &[u8], p: usize) -> ((usize, usize), usize) {
    let q = b[p];
    let mut k = p + 1;
    while k < b.len() {
        match b[k] {
            b'\\' => k += 2,
            b'\n' | b'\r' => return ((p + 1, k), k),
            c if c == q => return ((p + 1, k), k + 1),
            _ => k += 1,
        }
    }
    ((p + 1, b.len()), b.len())
}

/// A list value whose content starts at `p` (just past `[`). One element:
/// its bounds. Several: the whole list content, so that the token rule sees
/// every element (two different actions make the answer invalid).
fn list_value(b: &[u8], p: usize) -> (usize, usize) {
    let n = b.len();
    let mut k = p;
    while k < n && b[k] <= b' ' {
        k += 1;
    }
    let (elem, mut after) = if k < n && is_quote(b[k]) {
        quoted(b, k)
    } else {
        let e = scan_until(b, k, b",]}\n\r");
        ((k, e), e)
    };
    while after < n && b[after] <= b' ' {
        after += 1;
    }
    if after < n && b[after] == b',' {
        // A trailing comma (`["hit",]`) still makes a one-element list.
        let mut m = after + 1;
        while m < n && b[m] <= b' ' {
            m += 1;
        }
        if m < n && b[m] != b']' && b[m] != b'}' {
            return (p, scan_until(b, p, b"]\n\r"));
        }
    }
    elem
}

/// Trim whitespace, control characters and stray quotes, backticks or
/// backslashes (`\"hit\"` in an escaped JSON string) from both ends of
/// `text[s..e]`; None when nothing is left.
fn trim_value(text: &str, s: usize, e: usize) -> Option<(usize, usize)> {
    let strip =
        |c: char| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '`' | '\\');
    let v = &text[s..e];
    let t = v.trim_start_matches(strip);
    let s2 = s + (v.len() - t.len());
    let t = t.trim_end_matches(strip);
    (!t.is_empty()).then(|| (s2, s2 + t.len()))
}

#[cfg(test)]
mod tests;
