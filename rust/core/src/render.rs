//! Drawing primitives over an RGB byte buffer: rectangles, sprites, text
//! (embedded font, see [`crate::font`]) and playing cards.
//!
//! All drawing is integer arithmetic on the bytes, so the same calls give the
//! same pixels on any thread. Envs keep their canvas between steps and redraw
//! only what changed ([`TextField`] does that for a line of text).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::card::Card;
use crate::env::{OBS_H, OBS_W};
use crate::font::{Face, Font};
pub use crate::widgets::{CardFace, CardRow, TextField};

/// An RGB colour.
pub type Rgb = [u8; 3];

/// The card table of gym_cards (#35654d).
pub const TABLE_GREEN: Rgb = [0x35, 0x65, 0x4d];
pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];
/// Suit red for hearts and diamonds.
pub const CARD_RED: Rgb = [0xc8, 0x10, 0x2e];
/// Card outline.
pub const CARD_EDGE: Rgb = [0x50, 0x50, 0x50];
/// Card back blue.
pub const CARD_BACK: Rgb = [0x1f, 0x4e, 0x9c];

/// A mutable view of a row-major RGB image (by default one 300x300x3 observation).
pub struct Canvas<'a> {
    data: &'a mut [u8],
    width: usize,
    height: usize,
}

impl<'a> Canvas<'a> {
    /// A canvas over one observation (`OBS_H * OBS_W * 3` bytes). Panics on
    /// another length: the engine always passes whole observations.
    pub fn new(data: &'a mut [u8]) -> Self {
        Canvas::with_size(data, OBS_W, OBS_H)
    }

    /// A canvas of any size over `width * height * 3` bytes.
    pub fn with_size(data: &'a mut [u8], width: usize, height: usize) -> Self {
        assert_eq!(
            data.len(),
            width * height * 3,
            "canvas buffer has the wrong length"
        );
        Canvas {
            data,
            width,
            height,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    /// The bytes, row-major RGB.
    pub fn data(&self) -> &[u8] {
        self.data
    }

    /// The colour at (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Fills the whole canvas.
    pub fn fill(&mut self, color: Rgb) {
        let (w, h) = (self.width as i32, self.height as i32);
        self.fill_rect(0, 0, w, h, color);
    }

    /// Fills the rectangle at (x, y) of size w x h, clipped to the canvas.
    pub fn fill_rect(&mut self, x: i32, y: i32, w: i32, h: i32, color: Rgb) {
        let Some((x0, y0, x1, y1)) = self.clip(x, y, w, h) else {
            return;
        };
        let row_bytes = (x1 - x0) * 3;
        // Write the first row pixel by pixel, then copy it: memcpy-speed fills.
        let first = (y0 * self.width + x0) * 3;
        for px in self.data[first..first + row_bytes].chunks_exact_mut(3) {
            px.copy_from_slice(&color);
        }
        for y in y0 + 1..y1 {
            let start = (y * self.width + x0) * 3;
            self.data.copy_within(first..first + row_bytes, start);
        }
    }

    fn clip(&self, x: i32, y: i32, w: i32, h: i32) -> Option<(usize, usize, usize, usize)> {
        let x0 = x.max(0) as i64;
        let y0 = y.max(0) as i64;
        let x1 = (x as i64 + w as i64).min(self.width as i64);
        let y1 = (y as i64 + h as i64).min(self.height as i64);
        (x1 > x0 && y1 > y0).then_some((x0 as usize, y0 as usize, x1 as usize, y1 as usize))
    }

    /// Copies `sprite` with its top-left corner at (x, y), clipped.
    pub fn blit(&mut self, x: i32, y: i32, sprite: &Sprite) {
        let Some((x0, y0, x1, y1)) = self.clip(x, y, sprite.width as i32, sprite.height as i32)
        else {
            return;
        };
        let sx = (x0 as i64 - x as i64) as usize;
        let sy = (y0 as i64 - y as i64) as usize;
        let n = (x1 - x0) * 3;
        for row in 0..(y1 - y0) {
            let src = ((sy + row) * sprite.width + sx) * 3;
            let dst = ((y0 + row) * self.width + x0) * 3;
            self.data[dst..dst + n].copy_from_slice(&sprite.rgb[src..src + n]);
        }
    }

    /// Blends one glyph's coverage in `color` with its pen at (x, baseline).
    pub(crate) fn draw_glyph(&mut self, font: &Font, c: char, x: i32, baseline: i32, color: Rgb) {
        let g = font.glyph(c);
        let gx = x + g.xmin;
        let gy = baseline + g.top;
        // Clip the glyph box once, then blend row by row.
        let c0 = (-gx).max(0) as usize;
        let c1 = (self.width as i32 - gx).clamp(0, g.width as i32) as usize;
        let r0 = (-gy).max(0) as usize;
        let r1 = (self.height as i32 - gy).clamp(0, g.height as i32) as usize;
        if c0 >= c1 || r0 >= r1 {
            return;
        }
        for row in r0..r1 {
            let cov = &g.coverage[row * g.width + c0..row * g.width + c1];
            let start = ((gy as usize + row) * self.width + (gx as usize + c0)) * 3;
            let px = &mut self.data[start..start + cov.len() * 3];
            for (p, &a) in px.chunks_exact_mut(3).zip(cov) {
                match a {
                    0 => {}
                    255 => p.copy_from_slice(&color),
                    _ => {
                        let a = a as u32;
                        for ch in 0..3 {
                            // round((bg * (255 - a) + fg * a) / 255), exactly, without a division
                            let t = p[ch] as u32 * (255 - a) + color[ch] as u32 * a + 128;
                            p[ch] = ((t + (t >> 8)) >> 8) as u8;
                        }
                    }
                }
            }
        }
    }

    /// Draws `text` on one line with the top of the line at (x, y); returns
    /// the pen advance in pixels.
    pub fn draw_text(&mut self, font: &Font, x: i32, y: i32, text: &str, color: Rgb) -> i32 {
        let baseline = y + font.ascent;
        let mut pen = x as f32;
        for c in text.chars() {
            self.draw_glyph(font, c, pen.round() as i32, baseline, color);
            pen += font.glyph(c).advance;
        }
        pen.round() as i32 - x
    }

    /// Draws one character with its ink box centred on (cx, cy).
    pub fn draw_char_centered(&mut self, font: &Font, c: char, cx: i32, cy: i32, color: Rgb) {
        let g = font.glyph(c);
        let x = cx - g.width as i32 / 2 - g.xmin;
        let baseline = cy - g.height as i32 / 2 - g.top;
        self.draw_glyph(font, c, x, baseline, color);
    }
}

/// A small RGB image (a pre-drawn card) copied into canvases with [`Canvas::blit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sprite {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Sprite {
    /// A sprite of one colour.
    pub fn filled(width: usize, height: usize, color: Rgb) -> Sprite {
        let mut rgb = vec![0; width * height * 3];
        Canvas::with_size(&mut rgb, width, height).fill(color);
        Sprite { width, height, rgb }
    }

    /// A canvas over the sprite's pixels, to draw into it.
    pub fn canvas(&mut self) -> Canvas<'_> {
        Canvas::with_size(&mut self.rgb, self.width, self.height)
    }
}

/// Pre-drawn faces of all 52 cards and a card back at one size, on one
/// background colour (so that blitting is a plain copy).
pub struct CardSprites {
    pub width: usize,
    pub height: usize,
    faces: Vec<Sprite>,
    back: Sprite,
}

fn in_rounded_rect(x: usize, y: usize, w: usize, h: usize, r: usize, inset: usize) -> bool {
    let (x, y, w, h, r) = (x as i64, y as i64, w as i64, h as i64, r as i64);
    let i = inset as i64;
    if x < i || y < i || x >= w - i || y >= h - i {
        return false;
    }
    let r = (r - i).max(0);
    let cx = if x < r + i {
        r + i
    } else if x >= w - r - i {
        w - r - i - 1
    } else {
        return true;
    };
    let cy = if y < r + i {
        r + i
    } else if y >= h - r - i {
        h - r - i - 1
    } else {
        return true;
    };
    let (dx, dy) = (x - cx, y - cy);
    dx * dx + dy * dy <= r * r
}

fn card_blank(w: usize, h: usize, bg: Rgb, face: Rgb) -> Sprite {
    let mut s = Sprite::filled(w, h, bg);
    let r = (w / 9).max(2);
    for y in 0..h {
        for x in 0..w {
            let c = if in_rounded_rect(x, y, w, h, r, 1) {
                face
            } else if in_rounded_rect(x, y, w, h, r, 0) {
                CARD_EDGE
            } else {
                continue;
            };
            let i = (y * w + x) * 3;
            s.rgb[i..i + 3].copy_from_slice(&c);
        }
    }
    s
}

/// A card face in the "jumbo index" style of large-print playing cards: the
/// corner index (rank over a small suit) as on any card, and the rank again,
/// large, in the middle with the suit beneath it. The games depend on the rank
/// only, and a VLM sees the frame downscaled (a 128 px tiny model, 336 px
/// LLaVA): a corner index alone is ~5 px tall at 128 px, the middle rank ~12 px.
fn draw_card_face(card: Card, w: usize, h: usize, bg: Rgb) -> Sprite {
    let mut s = card_blank(w, h, bg, WHITE);
    let color = if card.suit.is_red() { CARD_RED } else { BLACK };
    let rank_font = Font::get(Face::Bold, ((h as f32) * 0.2).round().max(8.0) as u32);
    let small_suit = Font::get(Face::Regular, ((h as f32) * 0.16).round().max(6.0) as u32);
    let mid_suit = Font::get(Face::Regular, ((h as f32) * 0.2).round().max(6.0) as u32);
    let label = card.rank_label();
    let symbol = card.suit.symbol().to_string();
    let m = (w as i32 / 14).max(2);
    let mut c = s.canvas();
    c.draw_text(&rank_font, m, m / 2, label, color);
    let sy = m / 2 + rank_font.ascent + 1;
    let rank_w = rank_font.text_width(label);
    let suit_w = small_suit.text_width(&symbol);
    c.draw_text(&small_suit, m + (rank_w - suit_w) / 2, sy, &symbol, color);
    // below the corner index: the rank as large as the card's width allows, then the suit
    let index_bottom = sy + small_suit.ascent;
    let mut px = ((h as f32) * 0.46).round().max(8.0) as u32;
    let mut big = Font::get(Face::Bold, px);
    while px > 8 && big.text_width(label) > w as i32 - 2 * m {
        px -= 1;
        big = Font::get(Face::Bold, px);
    }
    let (ink_top, ink_bottom) = label.chars().fold((i32::MAX, i32::MIN), |(t, b), ch| {
        let g = big.glyph(ch);
        (t.min(g.top), b.max(g.top + g.height as i32))
    });
    let suit_top = h as i32 - m - mid_suit.glyph(card.suit.symbol()).height as i32;
    let cy = (index_bottom + suit_top) / 2;
    let baseline = cy - (ink_top + ink_bottom) / 2;
    c.draw_text(
        &big,
        w as i32 / 2 - big.text_width(label) / 2,
        baseline - big.ascent,
        label,
        color,
    );
    c.draw_char_centered(
        &mid_suit,
        card.suit.symbol(),
        w as i32 / 2,
        suit_top + mid_suit.glyph(card.suit.symbol()).height as i32 / 2,
        color,
    );
    s
}

fn draw_card_back(w: usize, h: usize, bg: Rgb) -> Sprite {
    let mut s = card_blank(w, h, bg, WHITE);
    let inset = (w / 10).max(3);
    let r = (w / 9).max(2);
    for y in 0..h {
        for x in 0..w {
            if !in_rounded_rect(x, y, w, h, r, inset) {
                continue;
            }
            // A diagonal lattice, so the back reads as a card back at a glance.
            let on_line = (x + y).is_multiple_of(8) || (x + h - y).is_multiple_of(8);
            let c = if on_line {
                [0x6f, 0x9b, 0xe0]
            } else {
                CARD_BACK
            };
            let i = (y * w + x) * 3;
            s.rgb[i..i + 3].copy_from_slice(&c);
        }
    }
    s
}

impl CardSprites {
    /// The shared sprites for cards of `width` x `height` on `bg` (built once).
    pub fn get(width: usize, height: usize, bg: Rgb) -> Arc<CardSprites> {
        type Key = (usize, usize, Rgb);
        static CACHE: OnceLock<Mutex<HashMap<Key, Arc<CardSprites>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((width, height, bg))
            .or_insert_with(|| {
                let faces = (0..52)
                    .map(|i| {
                        let card = Card::new(crate::card::Suit::ALL[i / 13], (i % 13) as u8 + 1);
                        draw_card_face(card, width, height, bg)
                    })
                    .collect();
                Arc::new(CardSprites {
                    width,
                    height,
                    faces,
                    back: draw_card_back(width, height, bg),
                })
            })
            .clone()
    }

    /// The face of `card`.
    pub fn face(&self, card: Card) -> &Sprite {
        let suit = crate::card::Suit::ALL
            .iter()
            .position(|&s| s == card.suit)
            .unwrap_or(0);
        &self.faces[suit * 13 + (card.rank as usize - 1)]
    }

    /// The card back (the dealer's hidden card).
    pub fn back(&self) -> &Sprite {
        &self.back
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::OBS_BYTES;

    #[test]
    fn fill_rect_clips_and_fills_exactly() {
        let mut buf = vec![0u8; OBS_BYTES];
        let mut c = Canvas::new(&mut buf);
        c.fill(WHITE);
        c.fill_rect(290, -5, 20, 10, BLACK);
        assert_eq!(c.pixel(289, 0), WHITE);
        assert_eq!(c.pixel(290, 0), BLACK);
        assert_eq!(c.pixel(299, 4), BLACK);
        assert_eq!(c.pixel(299, 5), WHITE);
        c.fill_rect(400, 400, 10, 10, BLACK); // fully outside: no panic
    }

    #[test]
    fn text_draws_ink_inside_its_box_only() {
        let font = Font::get(Face::Bold, 36);
        let mut buf = vec![0u8; OBS_BYTES];
        let mut c = Canvas::new(&mut buf);
        c.fill(WHITE);
        let adv = c.draw_text(&font, 30, 60, "Target: 3", BLACK);
        assert!(adv > 100 && adv < 250, "advance {adv}");
        let mut dark = 0;
        for y in 0..300 {
            for x in 0..300 {
                if c.pixel(x, y)[0] < 128 {
                    dark += 1;
                    assert!(
                        (60..60 + font.line_height as usize).contains(&y),
                        "ink at y={y}"
                    );
                    assert!((30..30 + adv as usize + 2).contains(&x), "ink at x={x}");
                }
            }
        }
        assert!(dark > 500, "only {dark} dark pixels");
    }

    #[test]
    fn suit_symbols_are_in_the_font() {
        let font = Font::get(Face::Regular, 40);
        for s in crate::card::Suit::ALL {
            assert!(font.glyph(s.symbol()).width > 10, "{s:?}");
        }
    }

    #[test]
    fn the_rank_is_large_in_the_middle_of_the_card() {
        // Points24's card size: the middle band (below the corner index, above the suit) shows the rank
        let (w, h) = (60, 84);
        let sprites = CardSprites::get(w, h, TABLE_GREEN);
        let band = |s: &Sprite| -> Vec<bool> {
            let mut ink = Vec::new();
            for y in h * 2 / 5..h * 3 / 4 {
                for x in 0..w {
                    let i = (y * w + x) * 3;
                    ink.push(s.rgb[i..i + 3] != WHITE && s.rgb[i..i + 3] != CARD_EDGE);
                }
            }
            ink
        };
        let ranks = [
            "A", "2", "3", "4", "5", "6", "7", "8", "9", "T", "J", "Q", "K",
        ];
        let bands: Vec<Vec<bool>> = ranks
            .iter()
            .map(|r| band(sprites.face(Card::parse(&format!("S{r}")).unwrap())))
            .collect();
        for (i, a) in bands.iter().enumerate() {
            let inked = a.iter().filter(|&&x| x).count();
            assert!(
                inked > 150,
                "{}: only {inked} ink pixels in the middle",
                ranks[i]
            );
            for (j, b) in bands.iter().enumerate().skip(i + 1) {
                let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
                assert!(
                    differ > 60,
                    "{} and {} differ in {differ} middle pixels",
                    ranks[i],
                    ranks[j]
                );
            }
        }
        // the suit is not drawn there: spades and clubs of one rank have the same middle band
        assert_eq!(
            band(sprites.face(Card::parse("S7").unwrap())),
            band(sprites.face(Card::parse("C7").unwrap()))
        );
    }

    #[test]
    fn red_and_black_cards_and_back_differ() {
        let sprites = CardSprites::get(60, 84, TABLE_GREEN);
        let h5 = sprites.face(Card::parse("H5").unwrap());
        let s5 = sprites.face(Card::parse("S5").unwrap());
        let has = |s: &Sprite, c: Rgb| s.rgb.chunks_exact(3).any(|p| p == c);
        assert!(has(h5, CARD_RED) && !has(h5, BLACK));
        assert!(has(s5, BLACK) && !has(s5, CARD_RED));
        assert!(has(sprites.back(), CARD_BACK));
        assert_eq!(&h5.rgb[0..3], &TABLE_GREEN, "corners show the table");
    }
}
