//! Engine-level checks over the real games: incremental redraws give the same
//! pixels as full redraws, and the vector env is thread-count independent.

use serde_json::Map;
use vlmrl_core::env::OBS_BYTES;
use vlmrl_core::render::Canvas;
use vlmrl_core::rng::Rng;
use vlmrl_core::vecenv::{AutoReset, VecEnv};

const GAMES: [&str; 4] = [
    "NumberLine-v0",
    "EZPoints-v0",
    "Points24-v0",
    "Blackjack-v0",
];

#[test]
fn incremental_redraw_equals_full_redraw() {
    for id in GAMES {
        let mut env = vlmrl_envs::make(id, &Map::new()).unwrap();
        let mut rng = Rng::new(42);
        let mut policy = Rng::new(7);
        let mut incremental = vec![0u8; OBS_BYTES];
        let mut full = vec![0u8; OBS_BYTES];
        env.reset(&mut rng, None).unwrap();
        env.render(&mut Canvas::new(&mut incremental), true);
        for step in 0..3000 {
            let n = env.num_actions() as u64;
            // Mostly the expert (long episodes), sometimes a random action.
            let a = if policy.bernoulli(0.7) {
                env.expert_action()
            } else {
                policy.below(n) as i64
            };
            let t = env.step(a, &mut rng).unwrap();
            if t.done() {
                env.reset(&mut rng, None).unwrap();
            }
            env.render(&mut Canvas::new(&mut incremental), false);
            full.fill(0);
            env.render(&mut Canvas::new(&mut full), true);
            assert!(
                incremental == full,
                "{id}: incremental redraw differs at step {step}"
            );
        }
    }
}

fn stream(id: &str, threads: usize, seed: u64) -> Vec<(u64, Vec<f64>)> {
    let envs = (0..6)
        .map(|_| vlmrl_envs::make(id, &Map::new()).unwrap())
        .collect();
    let mut v = VecEnv::new(envs, threads, AutoReset::NextStep, seed).unwrap();
    v.reset(None, None, None).unwrap();
    let mut policy = Rng::new(1);
    let mut out = Vec::new();
    for _ in 0..300 {
        let actions: Vec<i64> = (0..6)
            .map(|i| policy.below(v.env(i).num_actions() as u64) as i64)
            .collect();
        v.step(&actions).unwrap();
        // A cheap fingerprint of all frames (FNV-1a over 8-byte words).
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for w in v.obs().chunks_exact(8) {
            h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x100_0000_01b3);
        }
        out.push((h, v.rewards().to_vec()));
    }
    out
}

#[test]
fn vector_env_streams_depend_on_seed_not_threads() {
    for id in GAMES {
        let a = stream(id, 1, 9);
        assert_eq!(a, stream(id, 2, 9), "{id}: 1 and 2 threads differ");
        assert_eq!(a, stream(id, 3, 9), "{id}: 1 and 3 threads differ");
        assert_ne!(
            a,
            stream(id, 2, 10),
            "{id}: another seed gives the same stream"
        );
    }
}

#[test]
fn registry_lists_games_and_rejects_unknown_ids() {
    // Other games may follow the four card games.
    assert_eq!(&vlmrl_envs::list_envs()[..GAMES.len()], &GAMES[..]);
    assert!(vlmrl_envs::make("vlmrl_fast/Points24-v0", &Map::new()).is_ok());
    let err = vlmrl_envs::make("Chess-v0", &Map::new()).err().unwrap();
    assert!(err.to_string().contains("Chess-v0"));
}
