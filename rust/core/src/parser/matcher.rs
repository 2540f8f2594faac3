//! Matching an action value against a vocabulary of action names.

use super::{is_word, ParserError};

/// Case folding used on both sides: ASCII letters lowercased; other
/// characters lowercased when their lowercase is a single character (so
/// offsets and lengths never change), else kept as they are.
pub(crate) fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut l = c.to_lowercase();
    match (l.next(), l.next()) {
        (Some(x), None) => x,
        _ => c,
    }
}

/// Fold `s`, collapse each run of whitespace into one space and trim it,
/// into `out` (cleared first).
pub(crate) fn normalize_into(s: &str, out: &mut Vec<char>) {
    out.clear();
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(fold(c));
        }
    }
}

/// One prepared action name.
#[derive(Debug, Clone)]
struct Name {
    /// Normalized (folded, whitespace-collapsed, trimmed) characters.
    chars: Vec<char>,
    /// Index reported for it: the first name with the same normalized form,
    /// so that duplicates count as one action.
    canon: i64,
    /// Needs a word boundary before/after (starts/ends with a word char).
    bound_start: bool,
    bound_end: bool,
}

/// A vocabulary of action names, prepared once for many answers.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    /// Names in their original order (exact matching reports the first).
    names: Vec<Name>,
    /// Indices into `names`, longest first (the token rule's tie-break).
    by_len: Vec<usize>,
}

impl Vocab {
    /// Prepare `names`. An empty (or whitespace-only) name is an error: it
    /// would match every answer. An empty list is allowed and matches nothing
    /// (an ALFWorld state with no admissible command).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<Self, ParserError> {
        let mut prepared: Vec<Name> = Vec::with_capacity(names.len());
        for (index, raw) in names.iter().enumerate() {
            let mut chars = Vec::new();
            normalize_into(raw.as_ref(), &mut chars);
            let (Some(&first), Some(&last)) = (chars.first(), chars.last()) else {
                return Err(ParserError::EmptyName { index, name: raw.as_ref().to_string() });
            };
            let canon = prepared.iter().find(|n| n.chars == chars).map_or(index as i64, |n| n.canon);
            prepared.push(Name { chars, canon, bound_start: is_word(first), bound_end: is_word(last) });
        }
        let mut by_len: Vec<usize> = (0..prepared.len()).collect();
        by_len.sort_by_key(|&i| std::cmp::Reverse(prepared[i].chars.len()));
        Ok(Vocab { names: prepared, by_len })
    }

    /// Number of action names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the vocabulary has no names.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn exact(&self, v: &[char]) -> Option<i64> {
        self.names.iter().find(|n| n.chars == v).map(|n| n.canon)
    }

    /// Match one (already trimmed) value; -1 when invalid. `buf` is scratch.
    pub fn match_value(&self, value: &str, buf: &mut Vec<char>) -> i64 {
        normalize_into(value, buf);
        if let Some(i) = self.exact(buf) {
            return i;
        }
        // "take apple 1 from countertop 2." : one trailing period.
        if buf.last() == Some(&'.') {
            let mut end = buf.len() - 1;
            while end > 0 && buf[end - 1] == ' ' {
                end -= 1;
            }
            if let Some(i) = self.exact(&buf[..end]) {
                return i;
            }
        }
        self.token_match(buf)
    }

    /// The token rule: scan left to right; at each position take the longest
    /// name that occurs there with its boundaries; invalid unless exactly one
    /// distinct action was found.
    fn token_match(&self, v: &[char]) -> i64 {
        let mut found = -1i64;
        let mut p = 0;
        while p < v.len() {
            let word_before = p > 0 && is_word(v[p - 1]);
            let hit = self.by_len.iter().map(|&i| &self.names[i]).find(|n| {
                let end = p + n.chars.len();
                end <= v.len()
                    && !(n.bound_start && word_before)
                    && !(n.bound_end && end < v.len() && is_word(v[end]))
                    && v[p..end] == n.chars[..]
            });
            match hit {
                Some(n) => {
                    if found >= 0 && found != n.canon {
                        return -1;
                    }
                    found = n.canon;
                    p += n.chars.len();
                }
                None => p += 1,
            }
        }
        found
    }
}
