//! The expert: a planner over the full (known) state that returns the next
//! command toward the goal, from any state, including states a learner left
//! half-done (a wrong object in hand, a goal object half-processed).

use super::catalog::{FRIDGE, MICROWAVE, SINKBASIN};
use super::command::Command;
use super::task::{ObjState, TaskType};
use super::world::{Loc, World};

/// The next command of the expert plan. Always admissible in `w`.
pub fn next_command(w: &World) -> Command {
    let t = w.task;
    let Some(h) = w.held else {
        return fetch(w);
    };
    if w.objects[h].kind != t.obj {
        return put_down(w, h);
    }
    if t.ttype == TaskType::LookAtObjInLight {
        let lamp_at = w
            .receps
            .iter()
            .position(|r| r.contents.iter().any(|&i| w.objects[i].kind == t.lamp));
        let Some(r) = lamp_at else {
            return Command::Look;
        };
        if w.agent_at != Some(r) {
            return Command::GoTo(r);
        }
        let lamp = *w.receps[r]
            .contents
            .iter()
            .find(|&&i| w.objects[i].kind == t.lamp)
            .expect("lamp");
        return if w.objects[lamp].on {
            Command::Look
        } else {
            Command::Use(lamp)
        };
    }
    if let Some(st) = t.ttype.required_state() {
        if !w.objects[h].has(st) {
            let kind = match st {
                ObjState::Clean => SINKBASIN,
                ObjState::Hot => MICROWAVE,
                ObjState::Cool => FRIDGE,
            };
            let here = w.agent_at.filter(|&r| w.receps[r].kind == kind);
            return match here {
                Some(r) => match st {
                    ObjState::Clean => Command::Clean(h, r),
                    ObjState::Hot => Command::Heat(h, r),
                    ObjState::Cool => Command::Cool(h, r),
                },
                None => Command::GoTo(first_of(w, kind)),
            };
        }
    }
    let target = match t.ttype {
        TaskType::PickTwoObjAndPlace => t.best_target(w).0,
        _ => w
            .agent_at
            .filter(|&r| w.receps[r].kind == t.recep)
            .unwrap_or_else(|| first_of(w, t.recep)),
    };
    place_at(w, h, target)
}

/// The first receptacle of a kind (the generator guarantees one exists).
fn first_of(w: &World, kind: u8) -> usize {
    w.receps
        .iter()
        .position(|r| r.kind == kind)
        .expect("receptacle kind present")
}

/// Goes to `r`, opens it if needed, and moves the held object `h` there.
fn place_at(w: &World, h: usize, r: usize) -> Command {
    if w.agent_at != Some(r) {
        Command::GoTo(r)
    } else if !w.receps[r].accessible() {
        Command::Open(r)
    } else {
        Command::Move(h, r)
    }
}

/// Gets rid of an object the task does not need, where the agent stands.
fn put_down(w: &World, h: usize) -> Command {
    match w.agent_at {
        Some(r) => place_at(w, h, r),
        None => Command::GoTo(w.receps.iter().position(|r| !r.openable()).unwrap_or(0)),
    }
}

/// With empty hands: goes to an object the task still needs and takes it.
fn fetch(w: &World) -> Command {
    let t = w.task;
    let best = t.best_target(w).0;
    let needed = |o: usize| -> Option<usize> {
        let ob = &w.objects[o];
        let Loc::In(r) = ob.loc else { return None };
        if ob.kind != t.obj {
            return None;
        }
        let done = match t.ttype {
            TaskType::LookAtObjInLight => false,
            TaskType::PickTwoObjAndPlace => r == best,
            TaskType::PickAndPlace => t.in_target(w, ob.loc),
            _ => t.in_target(w, ob.loc) && ob.has(t.ttype.required_state().expect("state task")),
        };
        (!done).then_some(r)
    };
    // Prefer a needed object where the agent stands, else the first one.
    if let Some(r) = w.agent_at {
        if w.receps[r].contents.iter().any(|&o| needed(o).is_some()) {
            if !w.receps[r].accessible() {
                return Command::Open(r);
            }
            let o = *w.receps[r]
                .contents
                .iter()
                .find(|&&o| needed(o).is_some())
                .expect("found");
            return Command::Take(o, r);
        }
    }
    match (0..w.objects.len()).find_map(needed) {
        Some(r) => Command::GoTo(r),
        None => Command::Look,
    }
}
