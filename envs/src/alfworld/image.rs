//! The 300x300 image of an ALFWorld state: the task, where the agent stands,
//! the receptacle there with its objects drawn and labelled (or the room's
//! receptacles when it stands in the middle), the held object, and the last
//! feedback. Every band is redrawn only when what it shows changed.
//!
//! Layout (y ranges): task 0..36, location 36..56, receptacle panel
//! 56..206, held object 206..226, feedback 226..300.

use std::sync::Arc;

use vlmrl_core::font::{Face, Font};
use vlmrl_core::render::{Canvas, Rgb, BLACK, WHITE};

use super::catalog::{OBJECTS, RECEPS};
use super::game::Game;
use super::world::{Object, World};

const TASK_BG: Rgb = [40, 60, 110];
const LOC_BG: Rgb = [228, 222, 205];
const PANEL_BG: Rgb = [246, 242, 232];
const HELD_BG: Rgb = [218, 234, 218];
const FEEDBACK_BG: Rgb = WHITE;
const INK: Rgb = [25, 25, 25];

const PANEL_Y: i32 = 56;
const PANEL_H: i32 = 150;
const GRID_COLS: i32 = 4;
const GRID_ROWS: i32 = 3;

/// What each band showed last time, so unchanged bands are left alone.
#[derive(Default)]
pub struct View {
    task: Option<String>,
    location: Option<String>,
    panel: Option<Vec<u32>>,
    held: Option<String>,
    feedback: Option<String>,
}

struct Fonts {
    bold12: Arc<Font>,
    bold13: Arc<Font>,
    regular11: Arc<Font>,
    regular10: Arc<Font>,
}

fn fonts() -> &'static Fonts {
    static FONTS: std::sync::OnceLock<Fonts> = std::sync::OnceLock::new();
    FONTS.get_or_init(|| Fonts {
        bold12: Font::get(Face::Bold, 12),
        bold13: Font::get(Face::Bold, 13),
        regular11: Font::get(Face::Regular, 11),
        regular10: Font::get(Face::Regular, 10),
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

fn draw_lines(c: &mut Canvas<'_>, font: &Font, x: i32, y: i32, lines: &[String], color: Rgb) {
    for (i, line) in lines.iter().enumerate() {
        c.draw_text(font, x, y + i as i32 * font.line_height, line, color);
    }
}

/// "apple 1" plus its states: "(hot, clean)" or "(on)" for a lit lamp.
fn states_of(o: &Object) -> String {
    let s: Vec<&str> = [(o.clean, "clean"), (o.hot, "hot"), (o.cool, "cool"), (o.on, "on")]
        .iter()
        .filter(|s| s.0)
        .map(|s| s.1)
        .collect();
    if s.is_empty() { String::new() } else { format!("({})", s.join(", ")) }
}

fn state_bits(o: &Object) -> u32 {
    o.clean as u32 | (o.hot as u32) << 1 | (o.cool as u32) << 2 | (o.on as u32) << 3
}

/// A colour between `a` and `b` (t in 0..=256 steps toward b).
fn mix(a: Rgb, b: Rgb, t: u32) -> Rgb {
    let m = |x: u8, y: u8| ((x as u32 * (256 - t) + y as u32 * t) / 256) as u8;
    [m(a[0], b[0]), m(a[1], b[1]), m(a[2], b[2])]
}

/// An object icon centred at (cx, cy): a disc for food and dishes, a lamp
/// shape for lamps, a rounded block for everything else; outlined in dark.
fn draw_icon(c: &mut Canvas<'_>, kind: u8, lit: bool, cx: i32, cy: i32) {
    let k = &OBJECTS[kind as usize];
    let color = k.color;
    let edge = mix(color, BLACK, 150);
    if k.lamp {
        if lit {
            c.fill_rect(cx - 12, cy - 12, 24, 14, [255, 245, 170]);
        }
        c.fill_rect(cx - 8, cy - 9, 16, 8, color);
        c.fill_rect(cx - 1, cy - 1, 3, 9, edge);
        c.fill_rect(cx - 6, cy + 8, 13, 3, edge);
        return;
    }
    let r: i32 = 9;
    let round = kind < 12;
    for dy in -r..=r {
        let half = if round {
            let mut h = 0;
            while (h + 1) * (h + 1) + dy * dy <= r * r {
                h += 1;
            }
            h
        } else {
            r + 2
        };
        let edge_row = dy.abs() >= r - 1;
        c.fill_rect(cx - half, cy + dy, 2 * half + 1, 1, if edge_row { edge } else { color });
        if !edge_row {
            c.fill_rect(cx - half, cy + dy, 2, 1, edge);
            c.fill_rect(cx + half - 1, cy + dy, 2, 1, edge);
        }
    }
}

/// Key of the panel's content: where the agent is, open or not, the objects
/// there and their states.
fn panel_key(w: &World) -> Vec<u32> {
    match w.agent_at {
        None => vec![u32::MAX, w.receps.len() as u32],
        Some(r) => {
            let rc = &w.receps[r];
            let mut k = Vec::with_capacity(rc.contents.len() + 2);
            k.push(r as u32);
            k.push(rc.accessible() as u32);
            k.extend(rc.contents.iter().map(|&i| (i as u32) << 4 | state_bits(&w.objects[i])));
            k
        }
    }
}

fn draw_panel(c: &mut Canvas<'_>, w: &World) {
    let f = fonts();
    c.fill_rect(0, PANEL_Y, 300, PANEL_H, PANEL_BG);
    let Some(r) = w.agent_at else {
        // The middle of the room: the receptacles around, in three columns.
        let rows = ((w.receps.len() as i32) + 2) / 3;
        let lh = (PANEL_H - 8) / rows.max(1);
        let lh = lh.min(f.regular10.line_height + 2);
        for (i, rc) in w.receps.iter().enumerate() {
            let (col, row) = (i as i32 / rows, i as i32 % rows);
            let (x, y) = (8 + col * 98, PANEL_Y + 4 + row * lh);
            c.fill_rect(x, y + 3, 6, 6, RECEPS[rc.kind as usize].color);
            c.draw_text(&f.regular10, x + 9, y, &rc.name, INK);
        }
        return;
    };
    let rc = &w.receps[r];
    let color = RECEPS[rc.kind as usize].color;
    let (bx, by, bw, bh) = (6, PANEL_Y + 4, 288, PANEL_H - 8);
    c.fill_rect(bx, by, bw, bh, color);
    if !rc.accessible() {
        // A closed door: darker panel, a handle, and the word "closed".
        c.fill_rect(bx + 8, by + 8, bw - 16, bh - 16, mix(color, BLACK, 60));
        c.fill_rect(bx + bw - 34, by + bh / 2 - 12, 8, 24, mix(color, WHITE, 120));
        let tw = f.bold13.text_width("closed");
        c.fill_rect(150 - tw / 2 - 6, by + bh / 2 - 11, tw + 12, 22, WHITE);
        c.draw_text(&f.bold13, 150 - tw / 2, by + bh / 2 - 9, "closed", INK);
        return;
    }
    c.fill_rect(bx + 6, by + 6, bw - 12, bh - 12, mix(color, WHITE, 190));
    if rc.contents.is_empty() {
        let tw = f.regular11.text_width("empty");
        c.draw_text(&f.regular11, 150 - tw / 2, by + bh / 2 - 7, "empty", INK);
        return;
    }
    let (cw, ch) = ((bw - 12) / GRID_COLS, (bh - 12) / GRID_ROWS);
    let cells = (GRID_COLS * GRID_ROWS) as usize;
    for (slot, &i) in rc.contents.iter().enumerate().take(cells) {
        let o = &w.objects[i];
        let (col, row) = (slot as i32 % GRID_COLS, slot as i32 / GRID_COLS);
        let (x, y) = (bx + 6 + col * cw, by + 6 + row * ch);
        if slot == cells - 1 && rc.contents.len() > cells {
            let more = format!("+{} more", rc.contents.len() - cells + 1);
            c.draw_text(&f.regular10, x + 4, y + ch / 2 - 6, &more, INK);
            break;
        }
        draw_icon(c, o.kind, o.on, x + cw / 2, y + 12);
        let tw = f.regular10.text_width(&o.name);
        c.draw_text(&f.regular10, x + (cw - tw) / 2, y + 23, &o.name, INK);
        let st = states_of(o);
        if !st.is_empty() {
            let tw = f.regular10.text_width(&st);
            c.draw_text(&f.regular10, x + (cw - tw) / 2, y + 23 + f.regular10.line_height - 2, &st, INK);
        }
    }
}

impl View {
    /// Draws `game` into `c`; with `full` false only the bands whose content
    /// changed since the last call.
    pub fn render(&mut self, c: &mut Canvas<'_>, game: &Game, full: bool) {
        let f = fonts();
        let w = &game.world;
        if full {
            *self = View::default();
        }
        let task = w.task.description();
        if self.task.as_deref() != Some(task.as_str()) {
            c.fill_rect(0, 0, 300, 36, TASK_BG);
            let lines = wrap(&f.bold12, &format!("Task: {task}"), 290, 2);
            draw_lines(c, &f.bold12, 5, 3, &lines, WHITE);
            self.task = Some(task);
        }
        let location = match w.agent_at {
            None => "At: the middle of the room".to_string(),
            Some(r) => {
                let rc = &w.receps[r];
                match (rc.openable(), rc.open) {
                    (false, _) => format!("At: {}", rc.name),
                    (true, true) => format!("At: {} (open)", rc.name),
                    (true, false) => format!("At: {} (closed)", rc.name),
                }
            }
        };
        if self.location.as_deref() != Some(location.as_str()) {
            c.fill_rect(0, 36, 300, 20, LOC_BG);
            c.draw_text(&f.bold13, 5, 38, &location, INK);
            self.location = Some(location);
        }
        let key = panel_key(w);
        if self.panel.as_ref() != Some(&key) {
            draw_panel(c, w);
            self.panel = Some(key);
        }
        let held = match w.held {
            None => "Holding: nothing".to_string(),
            Some(h) => {
                let o = &w.objects[h];
                format!("Holding: {} {}", o.name, states_of(o)).trim_end().to_string()
            }
        };
        if self.held.as_deref() != Some(held.as_str()) {
            c.fill_rect(0, 206, 300, 20, HELD_BG);
            let x = match w.held {
                Some(h) => {
                    draw_icon(c, w.objects[h].kind, false, 14, 216);
                    28
                }
                None => 5,
            };
            c.draw_text(&f.bold12, x, 209, &held, INK);
            self.held = Some(held);
        }
        if self.feedback.as_deref() != Some(game.feedback.as_str()) {
            c.fill_rect(0, 226, 300, 74, FEEDBACK_BG);
            c.fill_rect(0, 226, 300, 1, [180, 180, 180]);
            let lines = wrap(&f.regular11, &game.feedback, 290, 5);
            draw_lines(c, &f.regular11, 5, 229, &lines, INK);
            self.feedback = Some(game.feedback.clone());
        }
    }
}
