"""The value-free advantage estimators (vlmrl_fast.advantages) against hand-computed examples, the engine's
group resets and state keys, the history window, and one update of each algorithm on each tiny family."""

import json
import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from gymnasium.vector import AutoresetMode

import vlmrl_fast
from vlmrl_fast import advantages as A
from vlmrl_fast import prompts
from vlmrl_fast.agent import Agent
from vlmrl_fast.config import ConfigError, load_config
from vlmrl_fast.models import TINY_FAMILIES, build_tiny_vlm
from vlmrl_fast.ppo import build_agent, train_update
from vlmrl_fast.rollout import EpisodeHistory, render_prompts, split_infos

pytestmark = pytest.mark.usefixtures("one_thread")

F, T_ = False, True


def flags(rows):
    return np.array(rows, bool)


# -- pure functions -----------------------------------------------------------------------------------------
def test_episode_index_and_returns_with_cut_episodes():
    # env 0: one episode ending at t=2; env 1: an episode ending at t=0, then one cut by the rollout's end
    rewards = np.array([[0.0, 2.0], [0.0, 0.5], [1.0, 0.25]])
    term = flags([[F, T_], [F, F], [T_, F]])
    trunc = flags([[F, F], [F, F], [F, F]])
    assert A.episode_index(term, trunc).tolist() == [[0, 0], [0, 1], [0, 1]]
    # the cut episode's return is what it received within the rollout: 0.5 + 0.25
    assert A.episode_returns(rewards, term, trunc).tolist() == [[1.0, 2.0], [1.0, 0.75], [1.0, 0.75]]


def test_grpo_hand_computed_ties_single_members_and_truncation():
    # group 0 = envs 0, 1, 2 (returns 1, 1, 0: a tie inside the group); group 1 = envs 3, 4, 5 (all 2)
    rewards = np.array([[0, 0, 0, 2, 1, 0], [0, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 2]], float)
    term = flags([[F, F, F, T_, F, F], [F, F, F, F, F, F], [T_, F, T_, F, T_, T_]])
    trunc = flags([[F, F, F, F, F, F], [F, F, F, F, F, F], [F, T_, F, F, F, F]])  # env 1: time limit
    adv, ret = A.grpo(rewards, term, trunc, group_size=3)
    # group 0, k=0: R = (1, 1, 0), mean 2/3, population std sqrt(2)/3
    hi, lo = (1 - 2 / 3) / (math.sqrt(2) / 3), (0 - 2 / 3) / (math.sqrt(2) / 3)
    np.testing.assert_allclose(adv[:, 0], [hi] * 3, rtol=1e-5)
    np.testing.assert_allclose(adv[:, 1], [hi] * 3, rtol=1e-5)
    np.testing.assert_allclose(adv[:, 2], [lo] * 3, rtol=1e-5)
    # group 1, k=0: all returns 2 -> 0; env 3's second episode (cut, alone at k=1) -> 0
    assert (adv[:, 3:] == 0).all()
    assert ret[:, 3].tolist() == [2, 0, 0] and ret[:, 4].tolist() == [2, 2, 2]


def test_grpo_and_rloo_give_zero_for_single_member_groups():
    rewards = np.array([[1.0, 0.0, 3.0]])
    done = flags([[T_, T_, T_]])
    none = flags([[F, F, F]])
    assert (A.grpo(rewards, done, none, group_size=1)[0] == 0).all()
    assert (A.rloo(rewards, done, none, group_size=1)[0] == 0).all()


def test_rloo_hand_computed():
    # one group of 4, returns 1, 1, 0, 2: A_i = R_i - mean of the other three
    rewards = np.array([[1.0, 1.0, 0.0, 2.0]])
    done = flags([[T_, T_, T_, T_]])
    adv, _ = A.rloo(rewards, done, flags([[F, F, F, F]]), group_size=4)
    np.testing.assert_allclose(adv[0], [1 - 1, 1 - 1, 0 - 4 / 3, 2 - 2 / 3], atol=1e-6)
    # all equal -> 0
    adv, _ = A.rloo(np.ones((1, 4)), done, flags([[F, F, F, F]]), group_size=4)
    assert (adv == 0).all()


def test_step_returns_stop_at_episode_ends():
    rewards = np.array([[1.0], [2.0], [4.0]])
    term = flags([[F], [T_], [F]])
    g = A.step_returns(rewards, term, flags([[F], [F], [F]]), gamma=0.5)
    assert g[:, 0].tolist() == [1 + 0.5 * 2, 2, 4]


def test_gigpo_hand_computed_step_groups_stay_within_env_groups():
    # envs 0, 1 (group 0) both start in state 7, then reach 8 and 9; envs 2, 3 (group 1) pass the same keys
    # but earn nothing: their steps must not join group 0's step groups
    keys = np.array([[7, 7, 7, 7], [8, 9, 8, 9]], np.uint64)
    rewards = np.array([[0, 0, 0, 0], [1, 0, 0, 0]], float)
    term = flags([[F, F, F, F], [T_, T_, T_, T_]])
    trunc = flags([[F, F, F, F], [F, F, F, F]])
    adv, _ = A.gigpo(rewards, term, trunc, keys, group_size=2, gamma=0.5, step_coef=1.0)
    # episode: R = (1, 0) -> (+1, -1); step group of state 7: G = (0.5, 0) -> (+1, -1); 8 and 9 alone -> 0
    np.testing.assert_allclose(adv[:, 0], [2, 1], atol=1e-5)
    np.testing.assert_allclose(adv[:, 1], [-2, -1], atol=1e-5)
    assert (adv[:, 2:] == 0).all()
    half, _ = A.gigpo(rewards, term, trunc, keys, group_size=2, gamma=0.5, step_coef=0.5)
    np.testing.assert_allclose(half[:, 0], [1.5, 1], atol=1e-5)


def test_group_size_must_divide_num_envs():
    with pytest.raises(ValueError, match="group_size must divide num_envs"):
        A.grpo(np.zeros((1, 3)), flags([[T_] * 3]), flags([[F] * 3]), group_size=2)


# -- engine: group resets and state keys -------------------------------------------------------------------
def test_group_envs_start_from_one_state_and_keys_follow_states():
    envs = vlmrl_fast.make_vec("EZPoints-v0", 6, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    obs, infos = envs.reset(seed=11, options={"group_size": 3})
    obs = np.asarray(obs).copy()
    per = split_infos(infos, 6)
    keys = envs.state_keys()
    assert keys.dtype == np.uint64 and keys.shape == (6,)
    for g in (0, 3):
        assert all(np.array_equal(obs[g], obs[g + j]) for j in (1, 2))
        assert all(per[g]["Cards"] == per[g + j]["Cards"] for j in (1, 2))
        assert keys[g] == keys[g + 1] == keys[g + 2]
    assert not np.array_equal(obs[0], obs[3]) and keys[0] != keys[3]
    # two envs of a group that take the same action stay in one state; a different action parts them
    names = envs.action_names
    a = np.array([names.index("1")] * 6)
    a[2] = names.index("+")
    envs.step(a)
    k = envs.state_keys()
    assert k[0] == k[1] != k[2]
    # without group_size every env draws its own state
    envs.reset(seed=11)
    assert len(set(envs.state_keys().tolist())) > 1
    with pytest.raises(vlmrl_fast.EnvArgumentError, match="group_size"):
        envs.reset(seed=1, options={"group_size": 4})
    envs.close()


# -- history window -----------------------------------------------------------------------------------------
def test_history_renders_last_k_steps_only_and_resets_at_episode_end():
    envs = vlmrl_fast.make_vec("NumberLine-v0", 2, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    obs, infos = envs.reset(seed=5)
    hist = EpisodeHistory(2, k=2)
    assert render_prompts("NumberLine-v0", split_infos(infos, 2), True, False, [hist.window(0), hist.window(1)]) \
        == render_prompts("NumberLine-v0", split_infos(infos, 2), True)  # empty history: the plain prompt
    names = envs.action_names
    texts = []
    for step in range(3):
        _, _, term, trunc, infos = envs.step(np.array([step % 2, 0]))
        per = split_infos(infos, 2)
        texts.append(per[0]["text"])
        hist.record([names[step % 2], names[0]], per, np.zeros(2, bool))
    assert hist.window(0) == [(names[1], texts[1]), (names[0], texts[2])]
    p = prompts.render("NumberLine-v0", per[0], history=hist.window(0))
    t = prompts.template("NumberLine-v0")
    assert t["history_header"] in p
    assert f'1. You chose "{names[1]}". Then: {texts[1]}' in p and f'2. You chose "{names[0]}". Then: {texts[2]}' in p
    assert p.count("You chose") == 2  # the first step is out of the window
    # the history sits between the task and the answer format, which are unchanged
    plain = prompts.render("NumberLine-v0", per[0])
    task, fmt = plain.split("\n\n", 1)
    assert p.startswith(task + "\n\n" + t["history_header"]) and p.endswith(fmt)
    # an episode's end empties the window
    hist.record([names[0], names[0]], per, np.array([True, False]))
    assert hist.window(0) == [] and len(hist.window(1)) == 2
    assert EpisodeHistory(2, k=0).window(0) == []
    envs.close()


# -- config -------------------------------------------------------------------------------------------------
def test_config_checks_group_size_and_algorithm():
    with pytest.raises(ConfigError, match="multiple of group_size"):
        load_config(None, {"num_envs": 6, "group_size": 4, "minibatch_size": 6})
    with pytest.raises(ConfigError, match="group_size must be >= 2"):
        load_config(None, {"algorithm": "grpo"})
    with pytest.raises(ConfigError, match="algorithm"):
        load_config(None, {"algorithm": "dpo"})
    with pytest.raises(ConfigError, match="group resets need the engine's games"):
        load_config(None, {"env": "examples.frog_fly:FrogFly-v0", "algorithm": "grpo", "group_size": 2})


# -- one update of each algorithm on each tiny family ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_alg")
    return {f: build_tiny_vlm(f, root / f, seed=3) for f in TINY_FAMILIES}


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("algorithm", A.ALGORITHMS)
def test_one_update_of_each_algorithm(tiny_dirs, family, algorithm, tmp_path):
    cfg = load_config(None, dict(
        model=str(tiny_dirs[family]), lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, num_envs=4,
        num_steps=2, group_size=2, algorithm=algorithm, max_new_tokens=6, temperature=1.0, update_epochs=2,
        minibatch_size=4, learning_rate=1e-2, min_learning_rate=1e-2, warm_start="none", eval_episodes=0,
        progress=False, history_steps=1, norm_adv=False, target_kl=0.0, seed=1))
    agent = build_agent(cfg, "cpu")
    names = [n for n, p in agent.named_parameters() if p.requires_grad]
    assert (agent.value_head is None) == (algorithm != "ppo")
    assert any("value_head" in n for n in names) == (algorithm == "ppo")
    before = {n: p.detach().clone() for n, p in agent.named_parameters() if p.requires_grad}
    envs = vlmrl_fast.make_vec(cfg.env, cfg.num_envs, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    params = [p for p in agent.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    record = train_update(agent, opt, Accelerator(cpu=True), envs, cfg, update=0)
    envs.close()
    assert math.isfinite(record["losses/policy_loss"]) and record["losses/nonfinite_skipped"] == 0
    assert record["adv/std"] > 0  # this seed's rollout has a learning signal (else nothing could change)
    if algorithm != "ppo":
        assert record["losses/value_loss"] == 0 and math.isnan(record["losses/explained_variance"])
        assert 0 <= record["adv/zero_episode_frac"] < 1
    if algorithm == "gigpo":
        assert record["adv/gigpo_shared_state_frac"] > 0  # the groups' first steps share their start state
    unchanged = [n for n, p in agent.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert unchanged == []
    if family == "llava":  # the saved agent says whether it has a value head, and loads back the same
        agent.save(tmp_path / "agent")
        meta = json.loads((tmp_path / "agent" / "agent.json").read_text())
        assert meta["value_head"] == (algorithm == "ppo")
        assert (tmp_path / "agent" / "value_head.safetensors").exists() == (algorithm == "ppo")
        assert (Agent.load(tmp_path / "agent").value_head is None) == (algorithm != "ppo")


def test_kl_estimators_hand_computed():
    from vlmrl_fast.ppo_math import kl_to_reference

    new, ref = torch.tensor([0.0, -1.0]), torch.tensor([-1.0, 0.0])  # ref - new = (-1, 1)
    assert float(kl_to_reference(new, ref, "k1")) == pytest.approx(0.0, abs=1e-7)
    assert float(kl_to_reference(new, ref, "k3")) == pytest.approx((math.exp(-1) + math.e - 2) / 2, rel=1e-6)
    assert float(kl_to_reference(new, ref, "k2")) == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError, match="k4"):
        kl_to_reference(new, ref, "k4")
    for est in ("k2_token", "k3_token"):
        with pytest.raises(ValueError, match="kl_to_reference_tokens"):
            kl_to_reference(new, ref, est)


def test_token_kl_hand_computed_ignores_padding():
    from vlmrl_fast.ppo_math import kl_to_reference_tokens, ppo_losses

    k3 = lambda d: math.exp(d) - d - 1
    new = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, 0.0, 0.0]])
    ref = torch.tensor([[-2.0, -1.0, -0.5], [-0.1, 50.0, -50.0]])  # padding holds junk that must not count
    mask = torch.tensor([[True, True, True], [True, False, False]])
    want = (k3(-1.0) + k3(1.0) + k3(0.0) + k3(0.2)) / 2
    assert float(kl_to_reference_tokens(new, ref, mask)) == pytest.approx(want, rel=1e-6)
    # the whole answer's k3 of the same log-probs is exp of the summed log-ratio: a different, larger figure
    seq = float(torch.tensor([k3(0.0), k3(0.2)]).mean())
    assert seq != pytest.approx(want, rel=1e-3)
    # ppo_losses adds kl_coef * the token KL, and refuses k3_token without the new per-token log-probs
    z = torch.zeros(2)
    out = ppo_losses(z, z, z, None, None, z, clip_coef=0.2, ref_logprob=z, kl_coef=0.5, kl_estimator="k3_token",
                     new_token_logprob=new, ref_token_logprob=ref, token_mask=mask)
    assert float(out.kl_ref) == pytest.approx(want, rel=1e-6)
    assert float(out.loss) == pytest.approx(0.5 * want, rel=1e-6)
    with pytest.raises(ValueError, match="new_token_logprob"):
        ppo_losses(z, z, z, None, None, z, clip_coef=0.2, kl_coef=0.5, kl_estimator="k3_token",
                   ref_token_logprob=ref)
    # k2_token: half the squared log-ratio per token, padding ignored, through ppo_losses too
    want2 = (0.5 + 0.5 + 0.0 + 0.5 * 0.2 ** 2) / 2
    assert float(kl_to_reference_tokens(new, ref, mask, "k2_token")) == pytest.approx(want2, rel=1e-6)
    out = ppo_losses(z, z, z, None, None, z, clip_coef=0.2, kl_coef=0.5, kl_estimator="k2_token",
                     new_token_logprob=new, ref_token_logprob=ref, token_mask=mask)
    assert float(out.kl_ref) == pytest.approx(want2, rel=1e-6)
    with pytest.raises(ValueError, match="per-token"):
        kl_to_reference_tokens(new, ref, mask, "k3")


def test_k2_token_pull_back_is_linear_in_a_drifted_tokens_log_ratio():
    """A reading token whose log-prob fell 30 nats below the reference's (as RL on EZPoints did within one
    update): k3_token's gradient on it is exp(30) - 1 ~ 1e13, which the gradient-norm clip turns into a step
    spent on that token alone; k2_token's is 30. Both are 0 where the policy equals the reference."""
    from vlmrl_fast.ppo_math import kl_to_reference_tokens

    ref = torch.tensor([[-0.01, -0.5]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    grads = {}
    for est in ("k2_token", "k3_token"):
        new = torch.tensor([[-30.01, -0.5]], requires_grad=True)
        kl_to_reference_tokens(new, ref, mask, est).backward()
        grads[est] = new.grad[0].tolist()
        same = torch.tensor([[-0.01, -0.5]], requires_grad=True)
        kl_to_reference_tokens(same, ref, mask, est).backward()
        assert same.grad.abs().max() == 0
    assert grads["k2_token"] == pytest.approx([-30.0, 0.0], abs=1e-4)
    assert grads["k3_token"][0] == pytest.approx(-(math.exp(30.0) - 1), rel=1e-4)


@pytest.mark.parametrize("env_id", ["NumberLine-v0", "EZPoints-v0"])
def test_group_members_start_their_kth_episodes_in_one_state(env_id):
    # games whose steps draw nothing: the k-th auto-reset of each group member starts from the same state,
    # however long its earlier episodes were (member 1 plays worse than the expert half of the time)
    envs = vlmrl_fast.make_vec(env_id, 2, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=3, options={"group_size": 2})
    starts = {0: [], 1: []}
    rng = np.random.default_rng(0)
    for _ in range(60):
        a = envs.expert_actions()
        if rng.random() < 0.5:
            a[1] = rng.integers(envs.single_action_space.n)
        _, _, term, trunc, _ = envs.step(a)
        keys = envs.state_keys()
        for i in (0, 1):
            if term[i] or trunc[i]:
                starts[i].append(int(keys[i]))
    k = min(len(starts[0]), len(starts[1]))
    assert k >= 5 and starts[0][:k] == starts[1][:k]
    assert len(set(starts[0][:k])) > 1  # and they are different states from episode to episode
    envs.close()
