//! The state of one household (receptacles, objects, the agent) and its
//! generation from random draws.

use super::catalog::{self, Room, DESKLAMP, FRIDGE, MICROWAVE, OBJECTS, RECEPS, SINKBASIN};
use super::task::{ObjState, Task, TaskType, TASK_TYPES};

/// The random draws the generator needs; implemented for the engine's Rng.
pub trait Dice {
    /// A uniform draw from 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize;
}

/// Where an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// In or on receptacle i.
    In(usize),
    /// In the agent's hand.
    Held,
}

/// A receptacle instance ("cabinet 3").
#[derive(Debug, Clone, PartialEq)]
pub struct Receptacle {
    pub kind: u8,
    pub num: u8,
    pub open: bool,
    /// Objects in or on it, in the order the text lists them.
    pub contents: Vec<usize>,
    pub name: String,
    /// "go to <name>", kept because it is listed at almost every step.
    pub go_to: String,
}

impl Receptacle {
    /// Has a door (cabinet, drawer, fridge, microwave, safe).
    pub fn openable(&self) -> bool {
        RECEPS[self.kind as usize].openable
    }
    /// Its contents can be seen, taken and added to.
    pub fn accessible(&self) -> bool {
        self.open || !self.openable()
    }
}

/// An object instance ("apple 1").
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: u8,
    pub num: u8,
    pub loc: Loc,
    pub clean: bool,
    pub hot: bool,
    pub cool: bool,
    /// A lamp that is turned on.
    pub on: bool,
    pub name: String,
}

impl Object {
    /// Whether the object is in state `st`.
    pub fn has(&self, st: ObjState) -> bool {
        match st {
            ObjState::Clean => self.clean,
            ObjState::Hot => self.hot,
            ObjState::Cool => self.cool,
        }
    }
    /// Lamps stay where they are.
    pub fn pickupable(&self) -> bool {
        !OBJECTS[self.kind as usize].lamp
    }
}

/// One household and the agent in it.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    pub room: Room,
    /// Receptacles sorted by name, then number.
    pub receps: Vec<Receptacle>,
    pub objects: Vec<Object>,
    /// The receptacle the agent stands at (None: the middle of the room).
    pub agent_at: Option<usize>,
    pub held: Option<usize>,
    pub task: Task,
}

/// The rooms in which a task type can be generated.
fn rooms_for(t: TaskType) -> &'static [Room] {
    match t {
        TaskType::PickAndPlace | TaskType::PickTwoObjAndPlace => &[
            Room::Kitchen,
            Room::LivingRoom,
            Room::Bedroom,
            Room::Bathroom,
        ],
        TaskType::LookAtObjInLight => &[Room::LivingRoom, Room::Bedroom],
        TaskType::PickCleanThenPlace => &[Room::Kitchen, Room::Bathroom],
        TaskType::PickHeatThenPlace | TaskType::PickCoolThenPlace => &[Room::Kitchen],
    }
}

/// Whether object kind `k` can serve a task of type `t`.
fn fits_task(k: u8, t: TaskType) -> bool {
    let o = &OBJECTS[k as usize];
    match t {
        TaskType::PickAndPlace | TaskType::PickTwoObjAndPlace => !o.lamp,
        TaskType::LookAtObjInLight => o.examinable,
        TaskType::PickCleanThenPlace => o.cleanable,
        TaskType::PickHeatThenPlace => o.heatable,
        TaskType::PickCoolThenPlace => o.coolable,
    }
}

/// The appliance a task type uses, which is no placement target for it.
fn appliance(t: TaskType) -> Option<u8> {
    match t {
        TaskType::PickCleanThenPlace => Some(SINKBASIN),
        TaskType::PickHeatThenPlace => Some(MICROWAVE),
        TaskType::PickCoolThenPlace => Some(FRIDGE),
        _ => None,
    }
}

/// Most clutter objects put on one receptacle (keeps the image legible).
const MAX_CLUTTER: usize = 5;

impl World {
    /// Generates a household with a solvable task of type `ttype` (drawn
    /// uniformly when None). No object of the task's kind starts in a target
    /// receptacle and nothing starts clean, hot, cool or lit, so every goal
    /// condition starts unmet.
    pub fn generate(d: &mut impl Dice, ttype: Option<TaskType>) -> World {
        let ttype = ttype.unwrap_or_else(|| TASK_TYPES[d.below(TASK_TYPES.len())]);
        loop {
            if let Some(w) = Self::try_generate(d, ttype) {
                return w;
            }
        }
    }

    fn try_generate(d: &mut impl Dice, ttype: TaskType) -> Option<World> {
        let rooms = rooms_for(ttype);
        let room = rooms[d.below(rooms.len())];
        let spec = room.spec();
        let mut receps = Vec::new();
        for &(kind, lo, hi) in spec.receps {
            let n = lo as usize + d.below((hi - lo) as usize + 1);
            for num in 1..=n {
                let name = format!("{} {}", RECEPS[kind as usize].name, num);
                let go_to = format!("go to {name}");
                receps.push(Receptacle {
                    kind,
                    num: num as u8,
                    open: false,
                    contents: Vec::new(),
                    name,
                    go_to,
                });
            }
        }
        let present = |k: u8| receps.iter().any(|r| r.kind == k);
        let room_objs: Vec<u8> = spec
            .objects
            .iter()
            .filter_map(|n| catalog::obj_index(n))
            .collect();
        let fits: Vec<u8> = room_objs
            .iter()
            .copied()
            .filter(|&k| {
                fits_task(k, ttype) && OBJECTS[k as usize].places.iter().any(|&p| present(p))
            })
            .collect();
        if fits.is_empty() {
            return None;
        }
        let obj = fits[d.below(fits.len())];
        let places = OBJECTS[obj as usize].places;
        let targets: Vec<u8> = places
            .iter()
            .copied()
            .filter(|&p| present(p) && Some(p) != appliance(ttype))
            .collect();
        let recep = match ttype {
            TaskType::LookAtObjInLight => u8::MAX,
            _ if targets.is_empty() => return None,
            _ => targets[d.below(targets.len())],
        };
        let sources: Vec<usize> = (0..receps.len())
            .filter(|&i| places.contains(&receps[i].kind) && receps[i].kind != recep)
            .collect();
        if sources.is_empty() {
            return None;
        }
        let mut w = World {
            room,
            receps,
            objects: Vec::new(),
            agent_at: None,
            held: None,
            task: Task {
                ttype,
                obj,
                recep,
                lamp: DESKLAMP,
                phrasing: d.below(2) as u8,
            },
        };
        let n_goal = match ttype {
            TaskType::PickTwoObjAndPlace => 2 + d.below(2),
            _ => 1 + d.below(2),
        };
        for _ in 0..n_goal {
            let r = sources[d.below(sources.len())];
            w.add_object(d, obj, r);
        }
        // The light task needs a lamp; other tasks in rooms with lamp places
        // get one half of the time, as furniture.
        let lamp_spots: Vec<usize> = (0..w.receps.len())
            .filter(|&i| {
                OBJECTS[DESKLAMP as usize]
                    .places
                    .contains(&w.receps[i].kind)
            })
            .collect();
        let want_lamp = ttype == TaskType::LookAtObjInLight || d.below(2) == 0;
        if want_lamp && !lamp_spots.is_empty() {
            let r = lamp_spots[d.below(lamp_spots.len())];
            w.add_object(d, DESKLAMP, r);
        } else if ttype == TaskType::LookAtObjInLight {
            return None;
        }
        for &k in &room_objs {
            if k == obj {
                continue;
            }
            let spots: Vec<usize> = (0..w.receps.len())
                .filter(|&i| {
                    OBJECTS[k as usize].places.contains(&w.receps[i].kind)
                        && w.receps[i].contents.len() < MAX_CLUTTER
                })
                .collect();
            if spots.is_empty() {
                continue;
            }
            for _ in 0..d.below(3) {
                let r = spots[d.below(spots.len())];
                w.add_object(d, k, r);
            }
        }
        w.number_objects(d);
        Some(w)
    }

    /// Adds an object of kind `k` to receptacle `r` at a random position.
    fn add_object(&mut self, d: &mut impl Dice, k: u8, r: usize) {
        let id = self.objects.len();
        self.objects.push(Object {
            kind: k,
            num: 0,
            loc: Loc::In(r),
            clean: false,
            hot: false,
            cool: false,
            on: false,
            name: String::new(),
        });
        let c = &mut self.receps[r].contents;
        let pos = d.below(c.len() + 1);
        c.insert(pos, id);
    }

    /// Gives the objects of each kind the numbers 1..n in random order, so a
    /// number says nothing about which object the task needs.
    fn number_objects(&mut self, d: &mut impl Dice) {
        for k in 0..OBJECTS.len() as u8 {
            let ids: Vec<usize> = (0..self.objects.len())
                .filter(|&i| self.objects[i].kind == k)
                .collect();
            let mut nums: Vec<u8> = (1..=ids.len() as u8).collect();
            for i in (1..nums.len()).rev() {
                nums.swap(i, d.below(i + 1));
            }
            for (&id, &num) in ids.iter().zip(&nums) {
                let o = &mut self.objects[id];
                o.num = num;
                o.name = format!("{} {}", OBJECTS[k as usize].name, num);
            }
        }
    }

    /// Finds a receptacle by its name ("cabinet 3").
    pub fn recep_by_name(&self, name: &str) -> Option<usize> {
        self.receps.iter().position(|r| r.name == name)
    }

    /// Finds an object by its name ("apple 1").
    pub fn object_by_name(&self, name: &str) -> Option<usize> {
        self.objects.iter().position(|o| o.name == name)
    }
}
