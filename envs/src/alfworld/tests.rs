//! Unit tests of the ALFWorld game logic (no engine needed).

use super::catalog::*;
use super::command::Command;
use super::game::{Game, NOTHING_HAPPENS};
use super::task::{Task, TaskType, TASK_TYPES};
use super::world::{Dice, Loc, Object, Receptacle, World};

/// SplitMix64 as a test dice (the env uses the engine's Rng).
struct Mix(u64);
impl Dice for Mix {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

fn recep(kind: u8, num: u8) -> Receptacle {
    Receptacle {
        kind,
        num,
        open: false,
        contents: vec![],
        name: format!("{} {}", RECEPS[kind as usize].name, num),
        go_to: format!("go to {} {}", RECEPS[kind as usize].name, num),
    }
}

/// A small hand-made kitchen: countertop 1 (apple 1, knife 1), cabinet 1
/// (mug 1), fridge 1, microwave 1, sinkbasin 1, diningtable 1; desk 1 with
/// desklamp 1 (not a kitchen thing, but it lets one world test every verb).
fn kitchen(ttype: TaskType, obj: &str, target: u8) -> World {
    let receps = vec![
        recep(CABINET, 1),
        recep(COUNTERTOP, 1),
        recep(DESK, 1),
        recep(DININGTABLE, 1),
        recep(FRIDGE, 1),
        recep(MICROWAVE, 1),
        recep(SINKBASIN, 1),
    ];
    let mut w = World {
        room: Room::Kitchen,
        receps,
        objects: vec![],
        agent_at: None,
        held: None,
        task: Task {
            ttype,
            obj: obj_index(obj).unwrap(),
            recep: target,
            lamp: DESKLAMP,
            phrasing: 0,
        },
    };
    for (name, r) in [
        ("apple", 1),
        ("knife", 1),
        ("mug", 0),
        ("desklamp", 2),
        ("apple", 0),
    ] {
        let kind = obj_index(name).unwrap();
        let num = w.objects.iter().filter(|o| o.kind == kind).count() as u8 + 1;
        let id = w.objects.len();
        w.objects.push(Object {
            kind,
            num,
            loc: Loc::In(r),
            clean: false,
            hot: false,
            cool: false,
            on: false,
            name: format!("{name} {num}"),
        });
        w.receps[r].contents.push(id);
    }
    w
}

fn play(g: &mut Game, text: &str) -> super::game::StepResult {
    let i = g
        .command_index(text)
        .unwrap_or_else(|| panic!("{text:?} not admissible: {:?}", names(g)));
    g.step(i as i64)
}

fn names(g: &Game) -> Vec<&str> {
    g.admissible.iter().map(|c| c.0.as_str()).collect()
}

#[test]
fn intro_and_first_admissible_commands() {
    let g = Game::from_world(
        kitchen(TaskType::PickHeatThenPlace, "apple", DININGTABLE),
        50,
    );
    assert_eq!(
        g.feedback,
        "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around you, \
         you see a cabinet 1, a countertop 1, a desk 1, a diningtable 1, a fridge 1, a microwave 1, and a \
         sinkbasin 1.\n\nYour task is to: put a hot apple in diningtable."
    );
    assert_eq!(
        names(&g),
        [
            "go to cabinet 1",
            "go to countertop 1",
            "go to desk 1",
            "go to diningtable 1",
            "go to fridge 1",
            "go to microwave 1",
            "go to sinkbasin 1",
            "inventory",
            "look"
        ]
    );
    assert!(!g.won);
    assert_eq!(g.goal_condition_success_rate, 0.0);
}

#[test]
fn heat_task_scripted_with_exact_feedback() {
    let mut g = Game::from_world(
        kitchen(TaskType::PickHeatThenPlace, "apple", DININGTABLE),
        50,
    );
    let r = play(&mut g, "go to countertop 1");
    assert_eq!(
        g.feedback,
        "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a knife 1."
    );
    assert_eq!((r.reward, r.terminated, r.truncated), (0.0, false, false));
    assert!(names(&g).contains(&"take apple 1 from countertop 1"));
    assert!(names(&g).contains(&"examine countertop 1"));
    assert!(!names(&g).contains(&"go to countertop 1"));
    play(&mut g, "take apple 1 from countertop 1");
    assert_eq!(g.feedback, "You pick up the apple 1 from the countertop 1.");
    assert!(names(&g).contains(&"move apple 1 to countertop 1"));
    assert!(
        !names(&g).iter().any(|c| c.starts_with("take")),
        "hands are full"
    );
    play(&mut g, "inventory");
    assert_eq!(g.feedback, "You are carrying: a apple 1.");
    play(&mut g, "go to microwave 1");
    assert_eq!(
        g.feedback,
        "You arrive at microwave 1. The microwave 1 is closed."
    );
    assert!(names(&g).contains(&"open microwave 1"));
    let r = play(&mut g, "heat apple 1 with microwave 1");
    assert_eq!(g.feedback, "You heat the apple 1 using the microwave 1.");
    assert_eq!(r.reward, 0.5);
    assert_eq!(g.goal_condition_success_rate, 0.5);
    play(&mut g, "examine apple 1");
    assert_eq!(g.feedback, "The apple 1 is hot.");
    play(&mut g, "go to diningtable 1");
    assert_eq!(
        g.feedback,
        "You arrive at diningtable 1. On the diningtable 1, you see nothing."
    );
    let r = play(&mut g, "move apple 1 to diningtable 1");
    assert_eq!(g.feedback, "You move the apple 1 to the diningtable 1.");
    assert_eq!((r.reward, r.terminated, r.truncated), (51.0, true, false));
    assert!(g.won);
}

#[test]
fn open_close_cool_clean_and_look() {
    let mut g = Game::from_world(kitchen(TaskType::PickCoolThenPlace, "mug", COUNTERTOP), 50);
    play(&mut g, "go to cabinet 1");
    assert_eq!(
        g.feedback,
        "You arrive at cabinet 1. The cabinet 1 is closed."
    );
    assert!(
        !names(&g).iter().any(|c| c.starts_with("take")),
        "closed: nothing to take"
    );
    play(&mut g, "open cabinet 1");
    assert_eq!(
        g.feedback,
        "You open the cabinet 1. The cabinet 1 is open. In it, you see a mug 1, and a apple 2."
    );
    play(&mut g, "examine cabinet 1");
    assert_eq!(
        g.feedback,
        "The cabinet 1 is open. In it, you see a mug 1, and a apple 2."
    );
    play(&mut g, "take mug 1 from cabinet 1");
    play(&mut g, "close cabinet 1");
    assert_eq!(g.feedback, "You close the cabinet 1.");
    play(&mut g, "look");
    assert_eq!(
        g.feedback,
        "You are facing the cabinet 1. Next to it, you see nothing."
    );
    play(&mut g, "go to sinkbasin 1");
    play(&mut g, "clean mug 1 with sinkbasin 1");
    assert_eq!(g.feedback, "You clean the mug 1 using the sinkbasin 1.");
    assert_eq!(g.goal_condition_success_rate, 0.0, "clean is not cool");
    play(&mut g, "go to fridge 1");
    play(&mut g, "cool mug 1 with fridge 1");
    assert_eq!(g.feedback, "You cool the mug 1 using the fridge 1.");
    play(&mut g, "examine mug 1");
    assert_eq!(g.feedback, "The mug 1 is clean and cool.");
    play(&mut g, "go to countertop 1");
    let r = play(&mut g, "move mug 1 to countertop 1");
    assert!(r.terminated && g.won && r.reward == 51.0);
}

#[test]
fn light_task_and_lamp_toggle() {
    let mut g = Game::from_world(kitchen(TaskType::LookAtObjInLight, "mug", u8::MAX), 50);
    assert!(g
        .feedback
        .ends_with("Your task is to: look at mug under the desklamp."));
    play(&mut g, "go to desk 1");
    assert_eq!(
        g.feedback,
        "You arrive at desk 1. On the desk 1, you see a desklamp 1."
    );
    assert!(
        !names(&g).contains(&"take desklamp 1 from desk 1"),
        "lamps stay put"
    );
    let r = play(&mut g, "use desklamp 1");
    assert_eq!(g.feedback, "You turn on the desklamp 1.");
    assert_eq!(r.reward, 0.5);
    play(&mut g, "use desklamp 1");
    assert_eq!(g.feedback, "You turn off the desklamp 1.");
    assert_eq!(g.goal_condition_success_rate, 0.0);
    play(&mut g, "go to cabinet 1");
    play(&mut g, "open cabinet 1");
    play(&mut g, "take mug 1 from cabinet 1");
    assert_eq!(g.goal_condition_success_rate, 0.5);
    play(&mut g, "go to desk 1");
    let r = play(&mut g, "use desklamp 1");
    assert!(r.terminated && g.won && r.reward == 51.0);
}

#[test]
fn inadmissible_command_changes_nothing_and_costs_one() {
    let mut g = Game::from_world(kitchen(TaskType::PickAndPlace, "knife", DININGTABLE), 50);
    play(&mut g, "go to countertop 1");
    let (world, adm) = (g.world.clone(), g.admissible.clone());
    let r = g.step(-1);
    assert_eq!(g.feedback, NOTHING_HAPPENS);
    assert_eq!(
        (r.reward, r.terminated, r.truncated, r.admissible),
        (-1.0, false, false, false)
    );
    assert_eq!(g.world, world);
    assert_eq!(g.admissible, adm);
    play(&mut g, "take knife 1 from countertop 1");
    play(&mut g, "go to diningtable 1");
    let r = g.step(-1);
    assert_eq!(r.reward, -1.0);
}

#[test]
fn step_limit_truncates() {
    let mut g = Game::from_world(kitchen(TaskType::PickAndPlace, "knife", DININGTABLE), 3);
    assert!(!g.step(-1).truncated);
    assert!(!play(&mut g, "look").truncated);
    let r = play(&mut g, "inventory");
    assert_eq!(g.feedback, "You are not carrying anything.");
    assert!(r.truncated && !r.terminated);
}

#[test]
fn two_objects_count_in_one_receptacle() {
    let mut g = Game::from_world(
        kitchen(TaskType::PickTwoObjAndPlace, "apple", DININGTABLE),
        50,
    );
    assert!(g.feedback.ends_with("put two apple in diningtable."));
    play(&mut g, "go to countertop 1");
    play(&mut g, "take apple 1 from countertop 1");
    play(&mut g, "go to diningtable 1");
    let r = play(&mut g, "move apple 1 to diningtable 1");
    assert_eq!((r.reward, r.terminated), (0.5, false));
    play(&mut g, "go to cabinet 1");
    play(&mut g, "open cabinet 1");
    play(&mut g, "take apple 2 from cabinet 1");
    play(&mut g, "go to diningtable 1");
    let r = play(&mut g, "move apple 2 to diningtable 1");
    assert_eq!((r.reward, r.terminated), (51.0, true));
}

#[test]
fn expert_recovers_from_a_wrong_object_in_hand() {
    let mut g = Game::from_world(
        kitchen(TaskType::PickCleanThenPlace, "apple", DININGTABLE),
        50,
    );
    play(&mut g, "go to countertop 1");
    play(&mut g, "take knife 1 from countertop 1");
    play(&mut g, "go to cabinet 1");
    for _ in 0..20 {
        let a = g.expert_action();
        if g.step(a).terminated {
            break;
        }
    }
    assert!(g.won);
}

/// Plays the expert from a fresh episode; returns (won, steps).
fn expert_episode(seed: u64, t: Option<TaskType>) -> (bool, u32, Game) {
    let mut g = Game::new(&mut Mix(seed), t, 50);
    assert_eq!(
        g.goal_condition_success_rate, 0.0,
        "seed {seed}: goal must start unmet"
    );
    while !g.won && g.steps < g.max_steps {
        let a = g.expert_action();
        let cmd = super::expert::next_command(&g.world);
        assert_eq!(
            g.admissible[a as usize].1, cmd,
            "seed {seed}: expert proposed an inadmissible command"
        );
        g.step(a);
    }
    (g.won, g.steps, g)
}

#[test]
fn expert_solves_1000_generated_tasks_of_each_type() {
    for t in TASK_TYPES {
        let mut max_steps = 0;
        for seed in 0..1000u64 {
            let (won, steps, g) = expert_episode(seed * 7919 + 1, Some(t));
            assert!(won, "{} seed {seed}: not solved\n{}", t.name(), g.feedback);
            assert_eq!(g.world.task.ttype, t);
            max_steps = max_steps.max(steps);
        }
        assert!(
            max_steps <= 20,
            "{}: longest expert episode {max_steps}",
            t.name()
        );
    }
}

#[test]
fn generation_is_deterministic_and_varied() {
    let a = Game::new(&mut Mix(5), None, 50);
    let b = Game::new(&mut Mix(5), None, 50);
    assert_eq!(a.world, b.world);
    assert_eq!(a.feedback, b.feedback);
    let mut intros = std::collections::HashSet::new();
    let mut types = std::collections::HashSet::new();
    for s in 0..300 {
        let g = Game::new(&mut Mix(s), None, 50);
        intros.insert(g.feedback.clone());
        types.insert(g.world.task.ttype);
        // Names are unique and numbered from 1 per kind.
        let mut seen = std::collections::HashSet::new();
        for o in &g.world.objects {
            assert!(seen.insert(o.name.clone()), "duplicate {}", o.name);
        }
    }
    assert!(intros.len() > 250);
    assert_eq!(types.len(), 6);
}

#[test]
fn task_type_names_round_trip() {
    for t in TASK_TYPES {
        assert_eq!(TaskType::from_name(t.name()), Some(t));
    }
    assert_eq!(TaskType::from_name("pick_and_place"), None);
    let _ = Command::Look;
}
