//! The six ALFWorld task types, their goal text and their goal conditions.

use super::catalog::{OBJECTS, RECEPS};
use super::world::{Loc, World};

/// The six task types of ALFWorld, named as ALFWorld names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskType {
    PickAndPlace,
    LookAtObjInLight,
    PickCleanThenPlace,
    PickHeatThenPlace,
    PickCoolThenPlace,
    PickTwoObjAndPlace,
}

/// All task types, in ALFWorld's order.
pub const TASK_TYPES: [TaskType; 6] = [
    TaskType::PickAndPlace,
    TaskType::LookAtObjInLight,
    TaskType::PickCleanThenPlace,
    TaskType::PickHeatThenPlace,
    TaskType::PickCoolThenPlace,
    TaskType::PickTwoObjAndPlace,
];

impl TaskType {
    /// ALFWorld's name for the type (the prefix of its game folders).
    pub fn name(self) -> &'static str {
        match self {
            TaskType::PickAndPlace => "pick_and_place_simple",
            TaskType::LookAtObjInLight => "look_at_obj_in_light",
            TaskType::PickCleanThenPlace => "pick_clean_then_place_in_recep",
            TaskType::PickHeatThenPlace => "pick_heat_then_place_in_recep",
            TaskType::PickCoolThenPlace => "pick_cool_then_place_in_recep",
            TaskType::PickTwoObjAndPlace => "pick_two_obj_and_place",
        }
    }

    /// Parses ALFWorld's name of a type.
    pub fn from_name(name: &str) -> Option<TaskType> {
        TASK_TYPES.iter().copied().find(|t| t.name() == name)
    }

    /// The object state the task asks for before placing, if any.
    pub fn required_state(self) -> Option<ObjState> {
        match self {
            TaskType::PickCleanThenPlace => Some(ObjState::Clean),
            TaskType::PickHeatThenPlace => Some(ObjState::Hot),
            TaskType::PickCoolThenPlace => Some(ObjState::Cool),
            _ => None,
        }
    }
}

/// The changes an appliance makes to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjState {
    Clean,
    Hot,
    Cool,
}

/// One task: its type, the object kind, and the target receptacle kind (the
/// lamp's object kind for "look at ... under the desklamp").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    pub ttype: TaskType,
    pub obj: u8,
    /// Target receptacle kind (index into RECEPS); unused for the light task.
    pub recep: u8,
    /// Lamp object kind (index into OBJECTS) for the light task.
    pub lamp: u8,
    /// Which of ALFWorld's two phrasings of the goal to use.
    pub phrasing: u8,
}

impl Task {
    /// The goal sentence, as in "put a clean lettuce in diningtable.".
    pub fn description(&self) -> String {
        let o = OBJECTS[self.obj as usize].name;
        let r = RECEPS.get(self.recep as usize).map_or("", |k| k.name);
        let alt = self.phrasing % 2 == 1;
        match (self.ttype, alt) {
            (TaskType::PickAndPlace, false) => format!("put a {o} in {r}."),
            (TaskType::PickAndPlace, true) => format!("put some {o} on {r}."),
            (TaskType::LookAtObjInLight, false) => {
                format!(
                    "look at {o} under the {}.",
                    OBJECTS[self.lamp as usize].name
                )
            }
            (TaskType::LookAtObjInLight, true) => {
                format!(
                    "examine the {o} with the {}.",
                    OBJECTS[self.lamp as usize].name
                )
            }
            (TaskType::PickCleanThenPlace, false) => format!("put a clean {o} in {r}."),
            (TaskType::PickCleanThenPlace, true) => format!("clean some {o} and put it in {r}."),
            (TaskType::PickHeatThenPlace, false) => format!("put a hot {o} in {r}."),
            (TaskType::PickHeatThenPlace, true) => format!("heat some {o} and put it in {r}."),
            (TaskType::PickCoolThenPlace, false) => format!("put a cool {o} in {r}."),
            (TaskType::PickCoolThenPlace, true) => format!("cool some {o} and put it in {r}."),
            (TaskType::PickTwoObjAndPlace, false) => format!("put two {o} in {r}."),
            (TaskType::PickTwoObjAndPlace, true) => format!("find two {o} and put them in {r}."),
        }
    }

    /// (satisfied, total) goal conditions in `world`, as ALFWorld counts
    /// them: one for a simple placement, two for the others (the state change
    /// or the second object or the lit lamp, and the placement).
    pub fn goal_conditions(&self, w: &World) -> (u32, u32) {
        match self.ttype {
            TaskType::PickAndPlace => {
                let placed = w
                    .objects
                    .iter()
                    .any(|o| o.kind == self.obj && self.in_target(w, o.loc));
                (placed as u32, 1)
            }
            TaskType::LookAtObjInLight => {
                let holding = w.held.is_some_and(|h| w.objects[h].kind == self.obj);
                let lit = w.agent_at.is_some_and(|r| {
                    w.receps[r].contents.iter().any(|&i| {
                        let o = &w.objects[i];
                        o.kind == self.lamp && o.on
                    })
                });
                (holding as u32 + lit as u32, 2)
            }
            TaskType::PickCleanThenPlace
            | TaskType::PickHeatThenPlace
            | TaskType::PickCoolThenPlace => {
                let st = self.ttype.required_state().expect("state task");
                let changed = w.objects.iter().any(|o| o.kind == self.obj && o.has(st));
                let placed = w
                    .objects
                    .iter()
                    .any(|o| o.kind == self.obj && o.has(st) && self.in_target(w, o.loc));
                (changed as u32 + placed as u32, 2)
            }
            TaskType::PickTwoObjAndPlace => (self.best_target(w).1.min(2), 2),
        }
    }

    /// True when `loc` is a receptacle of the target kind.
    pub fn in_target(&self, w: &World, loc: Loc) -> bool {
        matches!(loc, Loc::In(r) if w.receps[r].kind == self.recep)
    }

    /// For "two objects" tasks: the target receptacle holding most objects of
    /// the task's kind (lowest index on ties) and that count.
    pub fn best_target(&self, w: &World) -> (usize, u32) {
        let mut best = (usize::MAX, 0u32);
        for (ri, r) in w.receps.iter().enumerate() {
            if r.kind != self.recep {
                continue;
            }
            let n = r
                .contents
                .iter()
                .filter(|&&i| w.objects[i].kind == self.obj)
                .count() as u32;
            if best.0 == usize::MAX || n > best.1 {
                best = (ri, n);
            }
        }
        best
    }
}
