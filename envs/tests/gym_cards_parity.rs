//! Rules parity with the original gym_cards, each item as a scripted episode
//! through the registry (kwargs as Python passes them).

use serde_json::{json, Value};
use vlmrl_core::env::Env;
use vlmrl_core::error::EnvError;
use vlmrl_core::rng::Rng;

fn make(id: &str, kw: Value) -> Result<Box<dyn Env>, EnvError> {
    vlmrl_envs::make(id, kw.as_object().unwrap())
}

/// Plays `actions` (by name) from `state`; returns each step's reward and
/// whether it ended the episode.
fn play(env: &mut dyn Env, state: Value, actions: &[&str]) -> Vec<(f64, bool)> {
    let mut rng = Rng::new(0);
    env.reset(&mut rng, Some(&state)).unwrap();
    let names = env.action_names();
    actions
        .iter()
        .map(|a| {
            let i = names.iter().position(|n| n == a).unwrap() as i64;
            let t = env.step(i, &mut rng).unwrap();
            (t.reward, t.terminated || t.truncated)
        })
        .collect()
}

#[test]
fn numberline_rejects_a_start_on_the_target() {
    let mut env = make("NumberLine-v0", json!({})).unwrap();
    let mut rng = Rng::new(0);
    let err = env
        .reset(&mut rng, Some(&json!({"current": 3, "target": 3})))
        .unwrap_err();
    assert!(matches!(err, EnvError::InvalidState(_)), "{err:?}");
    assert!(err.to_string().contains("current == target == 3"), "{err}");
    // One step off the target is still a game: "+" reaches it.
    let steps = play(&mut *env, json!({"current": 2, "target": 3}), &["+"]);
    assert_eq!(steps, vec![(1.0, true)]);
    // Random resets never start on the target (gym_cards moves the target).
    for seed in 0..500 {
        env.reset(&mut Rng::new(seed), None).unwrap();
        let info = env.info();
        assert_ne!(info["Target"], info["Current"], "seed {seed}");
    }
}

const P24: &str = "Points24-v0";

#[test]
fn points24_scoring_exact_or_python() {
    let cards = json!({"cards": ["H2", "S5", "D6", "CT"]});
    // 2/5*6*10: 24 exactly, 24.000000000000004 in Python.
    let f = ["2", "/", "5", "*", "6", "*", "10", "="];
    for (kw, want) in [
        (json!({}), 10.0),
        (json!({"scoring": "exact"}), 10.0),
        (json!({"scoring": "python"}), -1.0),
    ] {
        let mut env = make(P24, kw.clone()).unwrap();
        let steps = play(&mut *env, cards.clone(), &f);
        assert_eq!(steps.last(), Some(&(want, true)), "{kw}");
    }
    // 5/2//(1/10): -1 exactly (25 // 1 ... is 25), 24.0 in Python.
    let cards = json!({"cards": ["H5", "S2", "DA", "CT"]});
    let f = ["5", "/", "2", "/", "/", "(", "1", "/", "10", ")", "="];
    for (kw, want) in [(json!({}), -1.0), (json!({"scoring": "python"}), 10.0)] {
        let mut env = make(P24, kw.clone()).unwrap();
        let steps = play(&mut *env, cards.clone(), &f);
        assert_eq!(steps.last(), Some(&(want, true)), "{kw}");
    }
    let err = make(P24, json!({"scoring": "float"})).err().unwrap();
    assert!(err.to_string().contains("\"float\""), "{err}");
}

#[test]
fn power_towers_score_at_once_under_both_scorings() {
    let cards = json!({"cards": ["H9", "S9", "D9", "CA"]});
    let f = ["9", "*", "*", "9", "*", "*", "9", "*", "1", "="];
    for kw in [json!({}), json!({"scoring": "python"})] {
        let mut env = make(P24, kw.clone()).unwrap();
        let t0 = std::time::Instant::now();
        let steps = play(&mut *env, cards.clone(), &f);
        assert_eq!(steps.last(), Some(&(-1.0, true)), "{kw}");
        assert!(t0.elapsed().as_millis() < 200, "{kw}: {:?}", t0.elapsed());
    }
}

#[test]
fn ezpoints_target_points_and_scoring() {
    let cards = json!({"cards": ["H3", "S4"]});
    let mut twelve = make("EZPoints-v0", json!({})).unwrap();
    assert_eq!(
        play(&mut *twelve, cards.clone(), &["3", "*", "4", "="])[3],
        (10.0, true)
    );
    // target_points=7: 3+4 now scores, 3*4 no longer does (the deal is unchanged).
    let mut seven = make("EZPoints-v0", json!({"target_points": 7})).unwrap();
    assert_eq!(
        play(&mut *seven, cards.clone(), &["3", "+", "4", "="])[3],
        (10.0, true)
    );
    assert_eq!(
        play(&mut *seven, cards.clone(), &["3", "*", "4", "="])[3],
        (-1.0, true)
    );
    let mut py = make("EZPoints-v0", json!({"scoring": "python"})).unwrap();
    assert_eq!(
        play(&mut *py, cards, &["3", "*", "4", "="])[3],
        (10.0, true)
    );
    let err = make("EZPoints-v0", json!({"target_points": "12"}))
        .err()
        .unwrap();
    assert!(err.to_string().contains("target_points"), "{err}");
}

#[test]
fn blackjack_natural_and_sab() {
    // Player natural (A + K) against a dealer 10 + 8 = 18: stand at once.
    let natural = json!({"player": ["HA", "SK"], "dealer": ["DT", "C8"]});
    // Both naturals.
    let both = json!({"player": ["HA", "SK"], "dealer": ["DA", "CQ"]});
    // 21 from three cards is no natural.
    let three = json!({"player": ["H7", "S7", "D7"], "dealer": ["DT", "C8"]});
    let cases = [
        (json!({}), [1.0, 0.0, 1.0]),
        (json!({"natural": true}), [1.5, 0.0, 1.0]),
        (json!({"sab": true}), [1.0, 0.0, 1.0]),
        (json!({"sab": true, "natural": true}), [1.0, 0.0, 1.0]),
    ];
    for (kw, want) in cases {
        let mut env = make("Blackjack-v0", kw.clone()).unwrap();
        let got: Vec<f64> = [&natural, &both, &three]
            .iter()
            .map(|s| play(&mut *env, (*s).clone(), &["stand"])[0].0)
            .collect();
        assert_eq!(got, want, "{kw}");
    }
    // sab: a natural wins +1 even where the dealer reaches 21 with more cards.
    let dealer21 = json!({"player": ["HA", "SK"], "dealer": ["D6", "C5"], "deck": ["HT"]});
    let mut plain = make("Blackjack-v0", json!({})).unwrap();
    assert_eq!(
        play(&mut *plain, dealer21.clone(), &["stand"])[0],
        (0.0, true)
    );
    let mut sab = make("Blackjack-v0", json!({"sab": true})).unwrap();
    assert_eq!(play(&mut *sab, dealer21, &["stand"])[0], (1.0, true));
    let err = make("Blackjack-v0", json!({"natural": 1})).err().unwrap();
    assert!(err.to_string().contains("natural must be a bool"), "{err}");
}
