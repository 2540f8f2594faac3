//! Parts of a frame that redraw only what changed since they were last
//! drawn, with exactly the pixels a full redraw would give: a line of text
//! ([`TextField`]) and a row of cards ([`CardRow`]).

use std::sync::Arc;

use crate::card::Card;
use crate::font::Font;
use crate::render::{Canvas, CardSprites, Rgb};

/// Where one character of a laid-out line sits.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Placed {
    ch: char,
    /// Pen x (where the glyph is drawn from).
    pen: i32,
    /// Ink columns [ink_l, ink_r); empty (MAX, MIN) for blank glyphs.
    ink_l: i32,
    ink_r: i32,
}

fn layout(font: &Font, x: i32, text: &str) -> (Vec<Placed>, i32) {
    let mut pen = x as f32;
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        let g = font.glyph(ch);
        let p = pen.round() as i32;
        let (ink_l, ink_r) = if g.width == 0 || g.coverage.iter().all(|&a| a == 0) {
            (i32::MAX, i32::MIN)
        } else {
            (p + g.xmin, p + g.xmin + g.width as i32)
        };
        out.push(Placed {
            ch,
            pen: p,
            ink_l,
            ink_r,
        });
        pen += g.advance;
    }
    (out, pen.round() as i32)
}

/// A one-line text area. `show` redraws only the glyphs from the first one
/// that changed, when that can be done exactly (no glyph ink crosses the
/// restart column); otherwise it redraws the whole field.
pub struct TextField {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
    pub bg: Rgb,
    pub fg: Rgb,
    pub font: Arc<Font>,
    shown: Option<String>,
    placed: Vec<Placed>,
    /// Right edge of the ink drawn now (columns at or past it are background).
    extent: i32,
}

impl TextField {
    /// A field at (x, y) of size w x h; its text is drawn at the top-left.
    pub fn new(x: i32, y: i32, w: i32, h: i32, bg: Rgb, fg: Rgb, font: Arc<Font>) -> TextField {
        TextField {
            x,
            y,
            w,
            h,
            bg,
            fg,
            font,
            shown: None,
            placed: Vec::new(),
            extent: x,
        }
    }

    fn draw_from(&self, canvas: &mut Canvas<'_>, placed: &[Placed]) {
        let baseline = self.y + self.font.ascent;
        for p in placed {
            canvas.draw_glyph(&self.font, p.ch, p.pen, baseline, self.fg);
        }
    }

    /// The restart index: the largest j <= common prefix such that every
    /// glyph before j inks left of the restart column and every glyph from j
    /// on (old and new) inks at or right of it.
    fn restart(&self, new: &[Placed], new_end: i32) -> Option<(usize, i32)> {
        let old = &self.placed;
        let k = old
            .iter()
            .zip(new)
            .take_while(|(a, b)| a.ch == b.ch)
            .count();
        (0..=k).rev().find_map(|j| {
            let r = new.get(j).map(|p| p.pen).unwrap_or(new_end);
            let left_ok = new[..j].iter().all(|p| p.ink_r <= r);
            let right_ok = new[j..].iter().chain(&old[j..]).all(|p| p.ink_l >= r);
            (left_ok && right_ok).then_some((j, r))
        })
    }

    /// Shows `text`. With `force` (or on first use) the whole field is
    /// cleared and drawn; else only what changed is redrawn.
    pub fn show(&mut self, canvas: &mut Canvas<'_>, text: &str, force: bool) {
        if !force && self.shown.as_deref() == Some(text) {
            return;
        }
        let (new, new_end) = layout(&self.font, self.x, text);
        let new_extent = new
            .iter()
            .map(|p| p.ink_r)
            .max()
            .unwrap_or(self.x)
            .max(self.x);
        let restart = if force || self.shown.is_none() {
            None
        } else {
            self.restart(&new, new_end)
        };
        match restart {
            Some((j, r)) => {
                let right = self.extent.max(new_extent).min(self.x + self.w);
                canvas.fill_rect(r, self.y, right - r, self.h, self.bg);
                self.draw_from(canvas, &new[j..]);
            }
            None => {
                canvas.fill_rect(self.x, self.y, self.w, self.h, self.bg);
                self.draw_from(canvas, &new);
            }
        }
        self.shown = Some(text.to_string());
        self.placed = new;
        self.extent = new_extent;
    }
}

/// What a card slot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardFace {
    Up(Card),
    Down,
}

/// A horizontal row of cards at a fixed y. When neither the old nor the new
/// row overlaps its cards, only the slots that changed are redrawn.
pub struct CardRow {
    pub y: i32,
    pub bg: Rgb,
    drawn: Option<Vec<(i32, CardFace)>>,
}

fn overlapping(cards: &[(i32, CardFace)], w: i32) -> bool {
    cards.windows(2).any(|p| (p[1].0 - p[0].0).abs() < w)
}

impl CardRow {
    pub fn new(y: i32, bg: Rgb) -> CardRow {
        CardRow { y, bg, drawn: None }
    }

    /// Draws `cards` (left x, face) with `sprites`.
    pub fn show(
        &mut self,
        canvas: &mut Canvas<'_>,
        sprites: &CardSprites,
        cards: &[(i32, CardFace)],
        full: bool,
    ) {
        let (w, h) = (sprites.width as i32, sprites.height as i32);
        let sprite = |f: CardFace| match f {
            CardFace::Up(c) => sprites.face(c),
            CardFace::Down => sprites.back(),
        };
        match &self.drawn {
            Some(old) if !full && !overlapping(old, w) && !overlapping(cards, w) => {
                if old.as_slice() == cards {
                    return;
                }
                // Erase a stale card unless a new card lands exactly on it.
                for (i, o) in old.iter().enumerate() {
                    if cards.get(i).map(|c| c.0) != Some(o.0) {
                        canvas.fill_rect(o.0, self.y, w, h, self.bg);
                    }
                }
                for (i, c) in cards.iter().enumerate() {
                    if old.get(i) != Some(c) {
                        canvas.blit(c.0, self.y, sprite(c.1));
                    }
                }
            }
            _ => {
                let width = canvas.width() as i32;
                canvas.fill_rect(0, self.y, width, h, self.bg);
                for c in cards {
                    canvas.blit(c.0, self.y, sprite(c.1));
                }
            }
        }
        self.drawn = Some(cards.to_vec());
    }
}
