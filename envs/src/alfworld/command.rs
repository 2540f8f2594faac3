//! ALFWorld's command grammar: the commands, their text, which are admissible
//! in a state, and what executing one does and says.

use super::catalog::{FRIDGE, MICROWAVE, SINKBASIN};
use super::world::{Loc, World};

/// One command; receptacles and objects are indices into the world's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Look,
    Inventory,
    GoTo(usize),
    Open(usize),
    Close(usize),
    /// take object from receptacle
    Take(usize, usize),
    /// move (held) object to receptacle
    Move(usize, usize),
    Heat(usize, usize),
    Cool(usize, usize),
    Clean(usize, usize),
    /// use a lamp
    Use(usize),
    ExamineRecep(usize),
    ExamineObj(usize),
}

impl Command {
    /// The command as the agent writes it ("take apple 1 from countertop 1").
    pub fn text(&self, w: &World) -> String {
        let r = |i: usize| w.receps[i].name.as_str();
        let o = |i: usize| w.objects[i].name.as_str();
        match *self {
            Command::Look => "look".to_string(),
            Command::Inventory => "inventory".to_string(),
            Command::GoTo(x) => w.receps[x].go_to.clone(),
            Command::Open(x) => format!("open {}", r(x)),
            Command::Close(x) => format!("close {}", r(x)),
            Command::Take(a, b) => format!("take {} from {}", o(a), r(b)),
            Command::Move(a, b) => format!("move {} to {}", o(a), r(b)),
            Command::Heat(a, b) => format!("heat {} with {}", o(a), r(b)),
            Command::Cool(a, b) => format!("cool {} with {}", o(a), r(b)),
            Command::Clean(a, b) => format!("clean {} with {}", o(a), r(b)),
            Command::Use(a) => format!("use {}", o(a)),
            Command::ExamineRecep(x) => format!("examine {}", r(x)),
            Command::ExamineObj(a) => format!("examine {}", o(a)),
        }
    }
}

/// "a apple 1, a bread 1, and a knife 2" (ALFWorld's article and list style),
/// or "nothing".
pub fn list_things<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = names.len();
    if n == 0 {
        return "nothing".to_string();
    }
    let mut s = String::with_capacity(n * 14);
    for (i, name) in names.enumerate() {
        if i > 0 {
            s.push_str(if i + 1 == n { ", and " } else { ", " });
        }
        s.push_str("a ");
        s.push_str(name);
    }
    s
}

/// What the agent sees of receptacle `r`: "On the countertop 1, you see ...",
/// "The cabinet 1 is closed." or "The cabinet 1 is open. In it, you see ...".
pub fn describe_recep(w: &World, r: usize) -> String {
    let rc = &w.receps[r];
    let things = || list_things(rc.contents.iter().map(|&i| w.objects[i].name.as_str()));
    if !rc.openable() {
        format!("On the {}, you see {}.", rc.name, things())
    } else if rc.open {
        format!("The {} is open. In it, you see {}.", rc.name, things())
    } else {
        format!("The {} is closed.", rc.name)
    }
}

/// "You are in the middle of a room. Looking quickly around you, you see ...".
pub fn describe_room(w: &World) -> String {
    format!(
        "You are in the middle of a room. Looking quickly around you, you see {}.",
        list_things(w.receps.iter().map(|r| r.name.as_str()))
    )
}

/// The commands admissible in `w`, sorted by their text as ALFWorld lists
/// them; returns the commands and their texts, index-aligned.
pub fn admissible(w: &World) -> Vec<(String, Command)> {
    let mut cmds: Vec<Command> = Vec::with_capacity(w.receps.len() + 16);
    for r in 0..w.receps.len() {
        if w.agent_at != Some(r) {
            cmds.push(Command::GoTo(r));
        }
    }
    cmds.push(Command::Inventory);
    cmds.push(Command::Look);
    if let Some(h) = w.held {
        cmds.push(Command::ExamineObj(h));
    }
    if let Some(r) = w.agent_at {
        let rc = &w.receps[r];
        cmds.push(Command::ExamineRecep(r));
        if rc.openable() {
            cmds.push(if rc.open {
                Command::Close(r)
            } else {
                Command::Open(r)
            });
        }
        if rc.accessible() {
            for &i in &rc.contents {
                let o = &w.objects[i];
                if !o.pickupable() {
                    cmds.push(Command::Use(i));
                } else if w.held.is_none() {
                    cmds.push(Command::Take(i, r));
                }
            }
            if let Some(h) = w.held {
                cmds.push(Command::Move(h, r));
            }
        }
        if let Some(h) = w.held {
            match rc.kind {
                MICROWAVE => cmds.push(Command::Heat(h, r)),
                FRIDGE => cmds.push(Command::Cool(h, r)),
                SINKBASIN => cmds.push(Command::Clean(h, r)),
                _ => {}
            }
        }
    }
    let mut out: Vec<(String, Command)> = cmds.into_iter().map(|c| (c.text(w), c)).collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Executes an admissible command and returns ALFWorld's feedback for it.
pub fn execute(w: &mut World, cmd: Command) -> String {
    match cmd {
        Command::Look => match w.agent_at {
            None => describe_room(w),
            Some(r) => format!(
                "You are facing the {}. Next to it, you see nothing.",
                w.receps[r].name
            ),
        },
        Command::Inventory => match w.held {
            None => "You are not carrying anything.".to_string(),
            Some(h) => format!("You are carrying: a {}.", w.objects[h].name),
        },
        Command::GoTo(r) => {
            w.agent_at = Some(r);
            format!(
                "You arrive at {}. {}",
                w.receps[r].name,
                describe_recep(w, r)
            )
        }
        Command::Open(r) => {
            w.receps[r].open = true;
            format!(
                "You open the {}. {}",
                w.receps[r].name,
                describe_recep(w, r)
            )
        }
        Command::Close(r) => {
            w.receps[r].open = false;
            format!("You close the {}.", w.receps[r].name)
        }
        Command::Take(o, r) => {
            w.receps[r].contents.retain(|&i| i != o);
            w.objects[o].loc = Loc::Held;
            w.held = Some(o);
            format!(
                "You pick up the {} from the {}.",
                w.objects[o].name, w.receps[r].name
            )
        }
        Command::Move(o, r) => {
            w.receps[r].contents.push(o);
            w.objects[o].loc = Loc::In(r);
            w.held = None;
            format!(
                "You move the {} to the {}.",
                w.objects[o].name, w.receps[r].name
            )
        }
        Command::Heat(o, r) => {
            let ob = &mut w.objects[o];
            ob.hot = true;
            ob.cool = false;
            format!("You heat the {} using the {}.", ob.name, w.receps[r].name)
        }
        Command::Cool(o, r) => {
            let ob = &mut w.objects[o];
            ob.cool = true;
            ob.hot = false;
            format!("You cool the {} using the {}.", ob.name, w.receps[r].name)
        }
        Command::Clean(o, r) => {
            w.objects[o].clean = true;
            format!(
                "You clean the {} using the {}.",
                w.objects[o].name, w.receps[r].name
            )
        }
        Command::Use(l) => {
            let lamp = &mut w.objects[l];
            lamp.on = !lamp.on;
            format!(
                "You turn {} the {}.",
                if lamp.on { "on" } else { "off" },
                lamp.name
            )
        }
        Command::ExamineRecep(r) => describe_recep(w, r),
        Command::ExamineObj(o) => {
            let ob = &w.objects[o];
            let states: Vec<&str> = [(ob.clean, "clean"), (ob.hot, "hot"), (ob.cool, "cool")]
                .iter()
                .filter(|s| s.0)
                .map(|s| s.1)
                .collect();
            if states.is_empty() {
                format!("There's nothing special about {}.", ob.name)
            } else {
                format!("The {} is {}.", ob.name, states.join(" and "))
            }
        }
    }
}

/// The opening observation: welcome line, the room, and the task.
pub fn intro(w: &World) -> String {
    format!(
        "-= Welcome to TextWorld, ALFRED! =-\n\n{}\n\nYour task is to: {}",
        describe_room(w),
        w.task.description()
    )
}
