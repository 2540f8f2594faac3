//! The formula games' expert plans: a full solution that extends the formula
//! typed so far, followed token by token by the expert, and "" on deals
//! without a solution; other games have no plan.

use serde_json::json;
use vlmrl_core::env::Env;
use vlmrl_core::rng::Rng;

fn make(id: &str) -> Box<dyn Env> {
    vlmrl_envs::make(id, json!({}).as_object().unwrap()).unwrap()
}

#[test]
fn the_plan_is_a_solution_the_expert_follows_to_a_win() {
    for id in ["Points24-v0", "EZPoints-v0"] {
        let mut env = make(id);
        let (mut solved, mut unsolvable) = (0, 0);
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            env.reset(&mut rng, None).unwrap();
            let plan = env.expert_plan().expect("formula games plan");
            let names = env.action_names();
            let mut typed = String::new();
            loop {
                // the plan extends what is typed, and does not change while it is followed
                assert!(
                    plan.starts_with(&typed),
                    "{id} seed {seed}: {plan:?} vs {typed:?}"
                );
                assert_eq!(env.expert_plan().unwrap(), plan, "{id} seed {seed}");
                let a = env.expert_action();
                let t = env.step(a, &mut rng).unwrap();
                if t.terminated || t.truncated {
                    if plan.is_empty() {
                        unsolvable += 1;
                        assert!(
                            t.reward < 0.0,
                            "{id} seed {seed}: no plan but reward {}",
                            t.reward
                        );
                    } else {
                        solved += 1;
                        assert_eq!(typed, plan, "{id} seed {seed}: ended before the plan");
                        assert!(t.reward > 0.0, "{id} seed {seed}: plan {plan} lost");
                    }
                    break;
                }
                typed.push_str(&names[a as usize]);
            }
        }
        assert!(solved > 100, "{id}: {solved} solved");
        if id == "Points24-v0" {
            assert!(
                unsolvable > 20,
                "Points24: {unsolvable} unsolvable deals of 200"
            );
        }
    }
}

#[test]
fn the_plan_follows_a_prefix_the_expert_did_not_type() {
    let mut env = make("Points24-v0");
    let mut rng = Rng::new(0);
    // after a first token typed by someone else, the plan extends it (or is "" when nothing does)
    env.reset(&mut rng, Some(&json!({"cards": ["SK", "HQ", "C4", "D4"]})))
        .unwrap();
    let names = env.action_names();
    let idx = |n: &str| names.iter().position(|x| x == n).unwrap() as i64;
    env.step(idx("4"), &mut rng).unwrap();
    let plan = env.expert_plan().unwrap();
    assert!(plan.is_empty() || plan.starts_with('4'), "{plan}");
}

#[test]
fn other_games_have_no_plan() {
    for id in ["NumberLine-v0", "Blackjack-v0"] {
        let mut env = make(id);
        env.reset(&mut Rng::new(1), None).unwrap();
        assert_eq!(env.expert_plan(), None, "{id}");
    }
}
