//! The embedded font (DejaVu Sans, shipped inside the build by the `dejavu`
//! crate: no system fonts, no download) and per-size glyph caches.
//!
//! Glyphs are rasterized once per (face, pixel size) with fontdue and kept as
//! coverage bitmaps; drawing text is then integer alpha blending only, which
//! is deterministic and cheap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use fontdue::{Font as FontdueFont, FontSettings};

/// Which DejaVu Sans face to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Face {
    Regular,
    Bold,
}

/// One rasterized glyph: a coverage bitmap and its placement.
#[derive(Debug, Clone)]
pub struct Glyph {
    /// Left edge relative to the pen position.
    pub xmin: i32,
    /// Top edge relative to the baseline (negative = above it).
    pub top: i32,
    pub width: usize,
    pub height: usize,
    /// Horizontal pen advance in pixels.
    pub advance: f32,
    /// Coverage, `width * height` bytes, row-major.
    pub coverage: Vec<u8>,
}

/// A face at one pixel size, with its glyphs rasterized on first use.
#[derive(Debug)]
pub struct Font {
    pub px: f32,
    /// Distance from the top of a line to the baseline.
    pub ascent: i32,
    /// Recommended distance between baselines.
    pub line_height: i32,
    ascii: Vec<Glyph>,
    extra: HashMap<char, Glyph>,
}

fn face_data(face: Face) -> &'static FontdueFont {
    static REGULAR: OnceLock<FontdueFont> = OnceLock::new();
    static BOLD: OnceLock<FontdueFont> = OnceLock::new();
    let (cell, bytes) = match face {
        Face::Regular => (&REGULAR, dejavu::sans::regular()),
        Face::Bold => (&BOLD, dejavu::sans::bold()),
    };
    cell.get_or_init(|| {
        FontdueFont::from_bytes(bytes, FontSettings::default())
            .expect("the embedded DejaVu font parses")
    })
}

fn rasterize(font: &FontdueFont, c: char, px: f32) -> Glyph {
    let (m, coverage) = font.rasterize(c, px);
    Glyph {
        xmin: m.xmin,
        top: -(m.ymin + m.height as i32),
        width: m.width,
        height: m.height,
        advance: m.advance_width,
        coverage,
    }
}

/// Symbols beyond ASCII that the games draw (card suits).
const EXTRA_CHARS: [char; 4] = ['\u{2660}', '\u{2663}', '\u{2665}', '\u{2666}'];

impl Font {
    fn build(face: Face, px: u32) -> Font {
        let f = face_data(face);
        let pxf = px as f32;
        let lm = f
            .horizontal_line_metrics(pxf)
            .expect("DejaVu has horizontal metrics");
        let ascii = (0u8..128).map(|b| rasterize(f, b as char, pxf)).collect();
        let extra = EXTRA_CHARS
            .iter()
            .map(|&c| (c, rasterize(f, c, pxf)))
            .collect();
        Font {
            px: pxf,
            ascent: lm.ascent.round() as i32,
            line_height: lm.new_line_size.round() as i32,
            ascii,
            extra,
        }
    }

    /// The shared font of `face` at `px` pixels (built once, then cached).
    pub fn get(face: Face, px: u32) -> Arc<Font> {
        type Cache = Mutex<HashMap<(Face, u32), Arc<Font>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((face, px))
            .or_insert_with(|| Arc::new(Font::build(face, px)))
            .clone()
    }

    /// The glyph of `c`; characters outside the cached set draw as '?'.
    pub fn glyph(&self, c: char) -> &Glyph {
        let code = c as u32;
        if code < 128 {
            &self.ascii[code as usize]
        } else {
            self.extra.get(&c).unwrap_or(&self.ascii[b'?' as usize])
        }
    }

    /// Width in pixels of `text` drawn on one line.
    pub fn text_width(&self, text: &str) -> i32 {
        let mut pen = 0.0f32;
        let mut right = 0i32;
        for c in text.chars() {
            let g = self.glyph(c);
            right = right.max(pen.round() as i32 + g.xmin + g.width as i32);
            pen += g.advance;
        }
        right.max(pen.round() as i32)
    }
}
