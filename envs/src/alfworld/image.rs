//! The 300x300 image of an ALFWorld state: the task, where the agent stands,
//! the receptacle there with its objects drawn and labelled (or the room's
//! receptacles when it stands in the middle), the held object, and the last
//! feedback.
//!
//! Layout (y ranges): task 0..36, location 36..62, receptacle panel
//! 62..204, held object 204..232, feedback 232..300. The two status lines
//! (location, held object) are set large (18 and 16 px bold): they stay
//! legible at a small model's input size (about 8 px tall at 128 px).
//!
//! Speed: a step changes a few small things, so each band remembers the
//! rectangles it inked and, when its content changes, clears just those and
//! draws the new content. Text lines are composed in a scratch sprite (glyph
//! coverage -> colour through a lookup table) and copied in one blit.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use vlmrl_core::font::{Face, Font};
use vlmrl_core::render::{Canvas, Rgb, Sprite, BLACK, WHITE};

use super::catalog::{OBJECTS, RECEPS};
use super::game::Game;
use super::task::Task;
use super::world::{Object, World};
use super::{MIDDLE, NOTHING};

const TASK_BG: Rgb = [40, 60, 110];
const LOC_BG: Rgb = [228, 222, 205];
const PANEL_BG: Rgb = [246, 242, 232];
const HELD_BG: Rgb = [218, 234, 218];
const FEEDBACK_BG: Rgb = WHITE;
const INK: Rgb = [25, 25, 25];

/// Bands: (y, height, background).
const TASK: (i32, i32, Rgb) = (0, 36, TASK_BG);
const LOCATION: (i32, i32, Rgb) = (36, 26, LOC_BG);
const PANEL: (i32, i32, Rgb) = (62, 142, PANEL_BG);
const HELD: (i32, i32, Rgb) = (204, 28, HELD_BG);
const FEEDBACK: (i32, i32, Rgb) = (232, 68, FEEDBACK_BG);

const GRID_COLS: i32 = 4;
const GRID_ROWS: i32 = 3;
const BORDER: i32 = 6;

/// A font with one ink colour on one background, as a coverage lookup table.
struct Style {
    font: Arc<Font>,
    lut: [Rgb; 256],
}

impl Style {
    fn new(face: Face, px: u32, fg: Rgb, bg: Rgb) -> Style {
        let mut lut = [bg; 256];
        for (a, c) in lut.iter_mut().enumerate() {
            let a = a as u32;
            for ch in 0..3 {
                c[ch] = ((bg[ch] as u32 * (255 - a) + fg[ch] as u32 * a + 127) / 255) as u8;
            }
        }
        Style {
            font: Font::get(face, px),
            lut,
        }
    }
}

struct Styles {
    task: Style,
    location: Style,
    panel: Style,
    held: Style,
    feedback: Style,
}

fn styles() -> &'static Styles {
    static S: OnceLock<Styles> = OnceLock::new();
    S.get_or_init(|| Styles {
        task: Style::new(Face::Bold, 12, WHITE, TASK_BG),
        location: Style::new(Face::Bold, 18, INK, LOC_BG),
        panel: Style::new(Face::Regular, 10, INK, PANEL_BG),
        held: Style::new(Face::Bold, 16, INK, HELD_BG),
        feedback: Style::new(Face::Regular, 11, INK, FEEDBACK_BG),
    })
}

/// Splits `text` into at most `max_lines` lines of at most `max_w` pixels,
/// breaking at spaces (and newlines); a cut-off last line ends with "...".
pub fn wrap(font: &Font, text: &str, max_w: i32, max_lines: usize) -> Vec<String> {
    let space = font.text_width(" ");
    let mut lines: Vec<String> = Vec::new();
    for para in text.split('\n').filter(|p| !p.is_empty()) {
        let mut cur = String::new();
        let mut cur_w = 0;
        for word in para.split(' ').filter(|w| !w.is_empty()) {
            let ww = font.text_width(word);
            if !cur.is_empty() && cur_w + space + ww > max_w {
                lines.push(std::mem::take(&mut cur));
                cur_w = 0;
            }
            if !cur.is_empty() {
                cur.push(' ');
                cur_w += space;
            }
            cur.push_str(word);
            cur_w += ww;
        }
        if !cur.is_empty() {
            lines.push(cur);
        }
        if lines.len() > max_lines {
            break;
        }
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        let last = lines.last_mut().expect("max_lines > 0");
        while !last.is_empty() && font.text_width(last) + font.text_width("...") > max_w {
            last.pop();
        }
        last.push_str("...");
    }
    lines
}

/// Icons, drawn once per (kind, lit, background) and blitted afterwards.
struct Icons {
    on_panel: Vec<Sprite>,
    on_held: Vec<Sprite>,
    lit_lamp: Sprite,
}

const ICON: usize = 24;

/// A colour between `a` and `b` (t in 0..=256 steps toward b).
fn mix(a: Rgb, b: Rgb, t: u32) -> Rgb {
    let m = |x: u8, y: u8| ((x as u32 * (256 - t) + y as u32 * t) / 256) as u8;
    [m(a[0], b[0]), m(a[1], b[1]), m(a[2], b[2])]
}

/// A disc for food and dishes, a lamp shape for lamps, a rounded block for
/// everything else; outlined in a darker shade of the object's colour.
fn draw_icon(kind: u8, lit: bool, bg: Rgb) -> Sprite {
    let mut s = Sprite::filled(ICON, ICON, bg);
    let mut c = s.canvas();
    let k = &OBJECTS[kind as usize];
    let (color, edge) = (k.color, mix(k.color, BLACK, 150));
    let (cx, cy) = (12, 12);
    if k.lamp {
        if lit {
            c.fill_rect(cx - 12, cy - 12, 24, 14, [255, 245, 170]);
        }
        c.fill_rect(cx - 8, cy - 9, 16, 8, color);
        c.fill_rect(cx - 1, cy - 1, 3, 9, edge);
        c.fill_rect(cx - 6, cy + 8, 13, 3, edge);
        return s;
    }
    let r: i32 = 9;
    let round = kind < 12;
    for dy in -r..=r {
        let half = if round {
            ((r * r - dy * dy) as f32).sqrt() as i32
        } else {
            r + 1
        };
        let edge_row = dy.abs() >= r - 1;
        c.fill_rect(
            cx - half,
            cy + dy,
            2 * half + 1,
            1,
            if edge_row { edge } else { color },
        );
        if !edge_row {
            c.fill_rect(cx - half, cy + dy, 2, 1, edge);
            c.fill_rect(cx + half - 1, cy + dy, 2, 1, edge);
        }
    }
    s
}

fn icons() -> &'static Icons {
    static I: OnceLock<Icons> = OnceLock::new();
    I.get_or_init(|| Icons {
        on_panel: (0..OBJECTS.len() as u8)
            .map(|k| draw_icon(k, false, PANEL_BG))
            .collect(),
        on_held: (0..OBJECTS.len() as u8)
            .map(|k| draw_icon(k, false, HELD_BG))
            .collect(),
        lit_lamp: draw_icon(super::catalog::DESKLAMP, true, PANEL_BG),
    })
}

/// "(hot, clean)", "(on)" for a lit lamp, or "".
fn states_of(o: &Object) -> String {
    let s: Vec<&str> = [
        (o.clean, "clean"),
        (o.hot, "hot"),
        (o.cool, "cool"),
        (o.on, "on"),
    ]
    .iter()
    .filter(|s| s.0)
    .map(|s| s.1)
    .collect();
    if s.is_empty() {
        String::new()
    } else {
        format!("({})", s.join(", "))
    }
}

fn state_bits(o: &Object) -> u32 {
    o.clean as u32 | (o.hot as u32) << 1 | (o.cool as u32) << 2 | (o.on as u32) << 3
}

/// One band of the image: what it shows and the rectangles it inked.
struct Band<K> {
    key: Option<K>,
    dirty: Vec<(i32, i32, i32, i32)>,
}

impl<K> Default for Band<K> {
    fn default() -> Self {
        Band {
            key: None,
            dirty: Vec::new(),
        }
    }
}

/// A canvas plus the scratch buffers for composing text lines.
struct Painter<'c, 'a> {
    c: &'c mut Canvas<'a>,
    line: &'c mut Sprite,
    cover: &'c mut Vec<u8>,
    labels: &'c mut [HashMap<String, Sprite>; 3],
}

impl Painter<'_, '_> {
    /// Draws one line of text with its top-left at (x, y); returns its rect.
    fn text(&mut self, st: &Style, x: i32, y: i32, text: &str) -> (i32, i32, i32, i32) {
        let font = &st.font;
        let w = font.text_width(text).max(1) as usize + 1;
        let h = font.line_height.max(1) as usize;
        self.cover.clear();
        self.cover.resize(w * h, 0);
        let mut pen = 0.0f32;
        for ch in text.chars() {
            let g = font.glyph(ch);
            let gx = pen.round() as i32 + g.xmin;
            let gy = font.ascent + g.top;
            // Clip the glyph box to the line once, then take the maximum
            // coverage where glyph boxes overlap.
            let c0 = (-gx).max(0) as usize;
            let c1 = ((w as i32 - gx).max(0) as usize).min(g.width);
            if c0 < c1 {
                for row in 0..g.height {
                    let py = gy + row as i32;
                    if py < 0 || py >= h as i32 {
                        continue;
                    }
                    let src = &g.coverage[row * g.width + c0..row * g.width + c1];
                    let start = py as usize * w + (gx + c0 as i32) as usize;
                    for (cell, &a) in self.cover[start..start + (c1 - c0)].iter_mut().zip(src) {
                        *cell = (*cell).max(a);
                    }
                }
            }
            pen += g.advance;
        }
        let line = &mut *self.line;
        line.width = w;
        line.height = h;
        line.rgb.resize(w * h * 3, 0);
        for (px, &a) in line.rgb.chunks_exact_mut(3).zip(self.cover.iter()) {
            px.copy_from_slice(&st.lut[a as usize]);
        }
        self.c.blit(x, y, line);
        (x, y, w as i32, h as i32)
    }

    /// Like [`Painter::text`] for text that recurs within an episode
    /// (object and receptacle names): composed once, then only blitted.
    fn label(
        &mut self,
        st: &Style,
        style_id: u8,
        x: i32,
        y: i32,
        text: &str,
    ) -> (i32, i32, i32, i32) {
        let cache = &mut self.labels[style_id as usize];
        if let Some(sp) = cache.get(text) {
            self.c.blit(x, y, sp);
            return (x, y, sp.width as i32, sp.height as i32);
        }
        let r = self.text(st, x, y, text);
        let cache = &mut self.labels[style_id as usize];
        if cache.len() > 256 {
            cache.clear();
        }
        cache.insert(text.to_string(), self.line.clone());
        r
    }

    /// After new text lines were drawn over old ones (same x, y and height
    /// per line index), clears only what the old lines covered beyond the
    /// new ones: a composed line carries its own background.
    fn clear_uncovered(
        &mut self,
        old: &[(i32, i32, i32, i32)],
        new: &[(i32, i32, i32, i32)],
        bg: Rgb,
    ) {
        for (i, &(x, y, w, h)) in old.iter().enumerate() {
            match new.get(i) {
                Some(&(nx, ny, nw, nh)) if (nx, ny, nh) == (x, y, h) => {
                    if w > nw {
                        self.c.fill_rect(x + nw, y, w - nw, h, bg);
                    }
                }
                _ => self.c.fill_rect(x, y, w, h, bg),
            }
        }
    }

    fn clear(&mut self, dirty: &mut Vec<(i32, i32, i32, i32)>, bg: Rgb) {
        for (x, y, w, h) in dirty.drain(..) {
            self.c.fill_rect(x, y, w, h, bg);
        }
    }
}

/// What each band showed last time, so unchanged bands are left alone.
#[derive(Default)]
pub struct View {
    task: Band<Task>,
    location: Band<(Option<usize>, bool)>,
    panel: Band<Vec<u32>>,
    held: Band<Option<(usize, u32)>>,
    feedback: Band<String>,
    line: Option<Sprite>,
    cover: Vec<u8>,
    /// Composed labels, by style (panel, location, held) and text.
    labels: [HashMap<String, Sprite>; 3],
}

/// Key of the panel's content: where the agent is, open or not, the objects
/// there and their states.
fn panel_key(w: &World) -> Vec<u32> {
    match w.agent_at {
        None => vec![u32::MAX],
        Some(r) => {
            let rc = &w.receps[r];
            let mut k = Vec::with_capacity(rc.contents.len() + 2);
            k.push(r as u32);
            k.push(rc.accessible() as u32);
            k.extend(
                rc.contents
                    .iter()
                    .map(|&i| (i as u32) << 4 | state_bits(&w.objects[i])),
            );
            k
        }
    }
}

fn draw_panel(p: &mut Painter<'_, '_>, w: &World, dirty: &mut Vec<(i32, i32, i32, i32)>) {
    let s = styles();
    let (py, ph, _) = PANEL;
    let Some(r) = w.agent_at else {
        // The middle of the room: the receptacles around, in three columns.
        let rows = (w.receps.len() as i32 + 2) / 3;
        let lh = ((ph - 8) / rows.max(1)).min(s.panel.font.line_height + 2);
        for (i, rc) in w.receps.iter().enumerate() {
            let (col, row) = (i as i32 / rows, i as i32 % rows);
            let (x, y) = (8 + col * 98, py + 4 + row * lh);
            p.c.fill_rect(x, y + 3, 6, 6, RECEPS[rc.kind as usize].color);
            dirty.push((x, y + 3, 6, 6));
            dirty.push(p.label(&s.panel, 0, x + 9, y, &rc.name));
        }
        return;
    };
    let rc = &w.receps[r];
    let color = RECEPS[rc.kind as usize].color;
    let (bx, by, bw, bh) = (6, py + 4, 288, ph - 8);
    // The receptacle's colour as a bar on top (cheap to redraw, unlike a frame).
    let bar = (bx, by, bw, BORDER);
    p.c.fill_rect(bar.0, bar.1, bar.2, bar.3, color);
    dirty.push(bar);
    if !rc.accessible() {
        // A closed door: a panel in the receptacle's colour, a handle, and
        // the word "closed".
        let door = (150 - 36, by + 16, 72, 84);
        p.c.fill_rect(door.0, door.1, door.2, door.3, mix(color, BLACK, 60));
        p.c.fill_rect(door.0 + 56, door.1 + 30, 6, 24, mix(color, WHITE, 120));
        dirty.push(door);
        let tw = s.panel.font.text_width("closed");
        dirty.push(p.label(&s.panel, 0, 150 - tw / 2, door.1 + door.3 + 4, "closed"));
        return;
    }
    if rc.contents.is_empty() {
        let tw = s.panel.font.text_width("empty");
        dirty.push(p.label(&s.panel, 0, 150 - tw / 2, by + bh / 2 - 7, "empty"));
        return;
    }
    let (ix, iy) = (bx, by + BORDER + 2);
    let (cw, ch) = (bw / GRID_COLS, (bh - BORDER - 2) / GRID_ROWS);
    let cells = (GRID_COLS * GRID_ROWS) as usize;
    let lh = s.panel.font.line_height;
    for (slot, &i) in rc.contents.iter().enumerate().take(cells) {
        let o = &w.objects[i];
        let (col, row) = (slot as i32 % GRID_COLS, slot as i32 / GRID_COLS);
        let (x, y) = (ix + col * cw, iy + row * ch);
        if slot == cells - 1 && rc.contents.len() > cells {
            let more = format!("+{} more", rc.contents.len() - cells + 1);
            dirty.push(p.label(&s.panel, 0, x + 4, y + ch / 2 - 6, &more));
            break;
        }
        let icon = if o.on {
            &icons().lit_lamp
        } else {
            &icons().on_panel[o.kind as usize]
        };
        p.c.blit(x + cw / 2 - 12, y + 1, icon);
        dirty.push((x + cw / 2 - 12, y + 1, ICON as i32, ICON as i32));
        let tw = s.panel.font.text_width(&o.name);
        dirty.push(p.label(&s.panel, 0, x + (cw - tw) / 2, y + 23, &o.name));
        let st = states_of(o);
        if !st.is_empty() {
            let tw = s.panel.font.text_width(&st);
            dirty.push(p.label(&s.panel, 0, x + (cw - tw) / 2, y + 21 + lh, &st));
        }
    }
}

impl View {
    /// Draws `game` into `c`; with `full` false only what changed since the
    /// last call (the canvas must then hold this view's last drawing).
    pub fn render(&mut self, c: &mut Canvas<'_>, game: &Game, full: bool) {
        let s = styles();
        let w = &game.world;
        let mut line = self
            .line
            .take()
            .unwrap_or_else(|| Sprite::filled(1, 1, WHITE));
        let mut p = Painter {
            c,
            line: &mut line,
            cover: &mut self.cover,
            labels: &mut self.labels,
        };
        if full {
            for (y, h, bg) in [TASK, LOCATION, PANEL, HELD, FEEDBACK] {
                p.c.fill_rect(0, y, 300, h, bg);
            }
            p.c.fill_rect(0, FEEDBACK.0, 300, 1, [180, 180, 180]);
            self.task = Band::default();
            self.location = Band::default();
            self.panel = Band::default();
            self.held = Band::default();
            self.feedback = Band::default();
        }
        if self.task.key != Some(w.task) {
            p.clear(&mut self.task.dirty, TASK.2);
            let lines = wrap(
                &s.task.font,
                &format!("Task: {}", w.task.description()),
                290,
                2,
            );
            for (i, l) in lines.iter().enumerate() {
                let r = p.text(&s.task, 5, 3 + i as i32 * s.task.font.line_height, l);
                self.task.dirty.push(r);
            }
            self.task.key = Some(w.task);
        }
        let lkey = (w.agent_at, w.agent_at.is_some_and(|r| w.receps[r].open));
        if self.location.key != Some(lkey) {
            let text = match w.agent_at {
                None => format!("At: {MIDDLE}"),
                Some(r) => {
                    let rc = &w.receps[r];
                    match (rc.openable(), rc.open) {
                        (false, _) => format!("At: {}", rc.name),
                        (true, true) => format!("At: {} (open)", rc.name),
                        (true, false) => format!("At: {} (closed)", rc.name),
                    }
                }
            };
            let r = [p.label(&s.location, 1, 5, LOCATION.0 + 2, &text)];
            p.clear_uncovered(&self.location.dirty, &r, LOCATION.2);
            self.location.dirty = r.to_vec();
            self.location.key = Some(lkey);
        }
        let pkey = panel_key(w);
        if self.panel.key.as_ref() != Some(&pkey) {
            p.clear(&mut self.panel.dirty, PANEL.2);
            draw_panel(&mut p, w, &mut self.panel.dirty);
            self.panel.key = Some(pkey);
        }
        let hkey = w.held.map(|h| (h, state_bits(&w.objects[h])));
        if self.held.key != Some(hkey) {
            p.clear(&mut self.held.dirty, HELD.2);
            let (x, text) = match w.held {
                None => (5, format!("Holding: {NOTHING}")),
                Some(h) => {
                    let o = &w.objects[h];
                    p.c.blit(2, HELD.0 + 2, &icons().on_held[o.kind as usize]);
                    self.held
                        .dirty
                        .push((2, HELD.0 + 2, ICON as i32, ICON as i32));
                    (
                        28,
                        format!("Holding: {} {}", o.name, states_of(o))
                            .trim_end()
                            .to_string(),
                    )
                }
            };
            let r = p.label(&s.held, 2, x, HELD.0 + 4, &text);
            self.held.dirty.push(r);
            self.held.key = Some(hkey);
        }
        if self.feedback.key.as_deref() != Some(game.feedback.as_str()) {
            let lh = s.feedback.font.line_height;
            let mut new = Vec::with_capacity(5);
            for (i, l) in wrap(&s.feedback.font, &game.feedback, 290, 5)
                .iter()
                .enumerate()
            {
                new.push(p.text(&s.feedback, 5, FEEDBACK.0 + 2 + i as i32 * lh, l));
            }
            p.clear_uncovered(&self.feedback.dirty, &new, FEEDBACK.2);
            self.feedback.dirty = new;
            self.feedback.key = Some(game.feedback.clone());
        }
        self.line = Some(line);
    }
}

/// A view described by text alone (the ALFWorldTW-v0 adapter, whose
/// TextWorld engine has no world model we can see): drawn with the same
/// bands, fonts and icons as ALFWorld-v0.
pub struct TextScene<'a> {
    pub task: &'a str,
    /// "At: ..." line, e.g. "At: fridge 1 (open)".
    pub location: &'a str,
    /// Names seen at the current place ("apple 1"), icons by their kind.
    pub items: &'a [String],
    pub held: Option<&'a str>,
    pub feedback: &'a str,
}

/// Draws a [`TextScene`] from scratch into `c`.
pub fn render_text_scene(c: &mut Canvas<'_>, scene: &TextScene<'_>) {
    let s = styles();
    let mut line = Sprite::filled(1, 1, WHITE);
    let mut cover = Vec::new();
    let mut labels: [HashMap<String, Sprite>; 3] = Default::default();
    let mut p = Painter {
        c,
        line: &mut line,
        cover: &mut cover,
        labels: &mut labels,
    };
    for (y, h, bg) in [TASK, LOCATION, PANEL, HELD, FEEDBACK] {
        p.c.fill_rect(0, y, 300, h, bg);
    }
    p.c.fill_rect(0, FEEDBACK.0, 300, 1, [180, 180, 180]);
    for (i, l) in wrap(&s.task.font, &format!("Task: {}", scene.task), 290, 2)
        .iter()
        .enumerate()
    {
        p.text(&s.task, 5, 3 + i as i32 * s.task.font.line_height, l);
    }
    p.text(&s.location, 5, LOCATION.0 + 2, scene.location);
    let kind_of = |name: &str| super::catalog::obj_index(name.split(' ').next().unwrap_or(""));
    let (bx, by, bw, bh) = (6, PANEL.0 + 4, 288, PANEL.1 - 8);
    let (cw, ch) = (bw / GRID_COLS, (bh - BORDER - 2) / GRID_ROWS);
    for (slot, name) in scene
        .items
        .iter()
        .enumerate()
        .take((GRID_COLS * GRID_ROWS) as usize)
    {
        let (col, row) = (slot as i32 % GRID_COLS, slot as i32 / GRID_COLS);
        let (x, y) = (bx + col * cw, by + BORDER + 2 + row * ch);
        if let Some(k) = kind_of(name) {
            p.c.blit(x + cw / 2 - 12, y + 1, &icons().on_panel[k as usize]);
        }
        let tw = s.panel.font.text_width(name);
        p.text(&s.panel, x + (cw - tw) / 2, y + 23, name);
    }
    let held = match scene.held {
        Some(h) => {
            if let Some(k) = kind_of(h) {
                p.c.blit(2, HELD.0 + 2, &icons().on_held[k as usize]);
            }
            format!("Holding: {h}")
        }
        None => format!("Holding: {NOTHING}"),
    };
    p.text(
        &s.held,
        if scene.held.is_some() { 28 } else { 5 },
        HELD.0 + 4,
        &held,
    );
    let lh = s.feedback.font.line_height;
    for (i, l) in wrap(&s.feedback.font, scene.feedback, 290, 5)
        .iter()
        .enumerate()
    {
        p.text(&s.feedback, 5, FEEDBACK.0 + 2 + i as i32 * lh, l);
    }
}
