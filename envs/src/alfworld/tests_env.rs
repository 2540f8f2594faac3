//! Tests of ALFWorld-v0 through the engine's Env trait: kwargs, states,
//! action checking, and the image (incremental redraw equals a full redraw).

use serde_json::{json, Map, Value};
use vlmrl_core::env::{Env, OBS_BYTES};
use vlmrl_core::error::EnvError;
use vlmrl_core::render::Canvas;
use vlmrl_core::rng::Rng;

fn kw(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn env(v: Value) -> Box<dyn Env> {
    super::make(&kw(v)).expect("valid kwargs")
}

#[test]
fn kwargs_are_checked() {
    for bad in [
        json!({"max_steps": 0}),
        json!({"task_types": ["cook"]}),
        json!({"task_types": []}),
        json!({"foo": 1}),
    ] {
        assert!(
            matches!(
                super::make(&kw(bad.clone())),
                Err(EnvError::InvalidArgument(_))
            ),
            "{bad}"
        );
    }
    let mut e = env(json!({"task_types": "pick_cool_then_place_in_recep", "max_steps": 7}));
    let mut rng = Rng::new(3);
    e.reset(&mut rng, None).unwrap();
    assert_eq!(e.info()["task_type"], "pick_cool_then_place_in_recep");
    for _ in 0..6 {
        assert!(!e.step(-1, &mut rng).unwrap().done());
    }
    let t = e.step(-1, &mut rng).unwrap();
    assert!(t.truncated && !t.terminated && t.reward == -1.0);
}

#[test]
fn states_pick_task_type_and_seed() {
    let mut e = env(json!({}));
    let mut rng = Rng::new(1);
    let st = json!({"task_type": "look_at_obj_in_light", "seed": 42});
    e.reset(&mut rng, Some(&st)).unwrap();
    let (text, names) = (e.text(), e.action_names());
    assert!(text.contains("Your task is to: "));
    assert_eq!(e.info()["task_type"], "look_at_obj_in_light");
    // The same seed gives the same household whatever the env's own rng.
    e.reset(&mut Rng::new(999), Some(&st)).unwrap();
    assert_eq!((e.text(), e.action_names()), (text, names));
    for bad in [
        json!({"task_type": "x"}),
        json!({"seed": -1}),
        json!({"room": 1}),
        json!(3),
    ] {
        assert!(
            matches!(
                e.reset(&mut rng, Some(&bad)),
                Err(EnvError::InvalidState(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn actions_are_checked_and_minus_one_is_inadmissible() {
    let mut e = env(json!({}));
    let mut rng = Rng::new(5);
    e.reset(&mut rng, None).unwrap();
    let n = e.num_actions() as i64;
    assert!(e.dynamic_actions());
    assert!(e.accepts_action(-1) && e.accepts_action(0) && e.accepts_action(n - 1));
    assert!(!e.accepts_action(n) && !e.accepts_action(-2));
    assert!(matches!(
        e.step(n, &mut rng),
        Err(EnvError::InvalidAction { .. })
    ));
    let before = (e.action_names(), e.info());
    let t = e.step(-1, &mut rng).unwrap();
    assert_eq!(t.reward, -1.0);
    assert_eq!(e.text(), "Nothing happens.");
    assert_eq!((e.action_names(), e.info()), before);
}

/// Renders `e` incrementally into `inc` and from scratch into a fresh
/// buffer; both must agree byte for byte.
fn check_render(e: &mut Box<dyn Env>, fresh: &mut Box<dyn Env>, inc: &mut [u8], step: usize) {
    e.render(&mut Canvas::new(inc), false);
    let mut full = vec![0u8; OBS_BYTES];
    fresh.render(&mut Canvas::new(&mut full), true);
    assert!(
        inc == &full[..],
        "step {step}: incremental redraw differs from a full redraw"
    );
}

#[test]
fn incremental_render_equals_full_render_and_shows_the_state() {
    let mut rng = Rng::new(11);
    let mut play_rng = Rng::new(12);
    for episode in 0..12u64 {
        let st =
            json!({"seed": episode, "task_type": super::TASK_TYPES[episode as usize % 6].name()});
        let mut e = env(json!({}));
        let mut twin = env(json!({}));
        e.reset(&mut rng, Some(&st)).unwrap();
        twin.reset(&mut rng, Some(&st)).unwrap();
        let mut inc = vec![0u8; OBS_BYTES];
        e.render(&mut Canvas::new(&mut inc), true);
        let first = inc.clone();
        for step in 0..30 {
            // Mostly the expert, sometimes a random or inadmissible command.
            let a = match play_rng.below(4) {
                0 => play_rng.below(e.num_actions() as u64 + 1) as i64 - 1,
                _ => e.expert_action(),
            };
            let t = e.step(a, &mut rng).unwrap();
            twin.step(a, &mut rng).unwrap();
            check_render(&mut e, &mut twin, &mut inc, step);
            if t.done() {
                break;
            }
        }
        assert_ne!(first, inc, "the image changes over an episode");
        if std::env::var_os("ALFWORLD_DUMP").is_some() {
            for (tag, img) in [("first", &first), ("last", &inc)] {
                let mut ppm = b"P6 300 300 255\n".to_vec();
                ppm.extend_from_slice(img);
                std::fs::write(format!("/tmp/alfworld_{episode}_{tag}.ppm"), ppm).unwrap();
            }
        }
    }
}

#[test]
fn wrap_breaks_at_spaces_and_marks_cuts() {
    let font = vlmrl_core::font::Font::get(vlmrl_core::font::Face::Regular, 11);
    let lines = super::image::wrap(&font, "aaa bbb ccc ddd", font.text_width("aaa bbb"), 5);
    assert_eq!(lines, ["aaa bbb", "ccc ddd"]);
    let lines = super::image::wrap(&font, "aaa bbb ccc ddd eee", font.text_width("aaa bbb"), 2);
    assert_eq!(lines.len(), 2);
    assert!(lines[1].ends_with("..."), "{lines:?}");
    assert_eq!(
        super::image::wrap(&font, "one\n\ntwo", 290, 5),
        ["one", "two"]
    );
}

#[test]
fn info_names_the_location_and_the_held_object_as_the_commands_change_them() {
    let mut e = env(json!({}));
    let mut rng = Rng::new(11);
    e.reset(
        &mut rng,
        Some(&json!({"task_type": "pick_and_place_simple", "seed": 5})),
    )
    .unwrap();
    assert_eq!(e.info()["location"], super::MIDDLE);
    assert_eq!(e.info()["holding"], super::NOTHING);
    let (mut went, mut took) = (false, false);
    for _ in 0..50 {
        let a = e.expert_action();
        let cmd = e.action_names()[a as usize].clone();
        let t = e.step(a, &mut rng).unwrap();
        let info = e.info();
        if let Some(place) = cmd.strip_prefix("go to ") {
            assert_eq!(info["location"], place, "{cmd}");
            went = true;
        }
        if let Some(rest) = cmd.strip_prefix("take ") {
            let obj = rest.split(" from ").next().unwrap();
            assert_eq!(info["holding"], obj, "{cmd}");
            took = true;
        }
        if cmd.starts_with("move ") || cmd.starts_with("put ") {
            assert_eq!(info["holding"], super::NOTHING, "{cmd}");
        }
        if t.done() {
            break;
        }
    }
    assert!(
        went && took,
        "the expert's episode goes somewhere and takes something"
    );
}
