"""PPO arithmetic against plain numpy references written here."""

import math

import numpy as np
import pytest
import torch

from vlmrl_fast.ops import gae
from vlmrl_fast.ppo_math import compute_gae, cosine_lr, explained_variance, normalize_advantages, ppo_losses


def gae_numpy(r, v, nv, term, trunc, gamma, lam):
    T, N = r.shape
    adv = np.zeros((T, N), np.float64)
    for n in range(N):
        nxt = 0.0
        for t in reversed(range(T)):
            delta = r[t, n] + gamma * (0.0 if term[t, n] else nv[t, n]) - v[t, n]
            nxt = delta + (0.0 if (term[t, n] or trunc[t, n]) else gamma * lam * nxt)
            adv[t, n] = nxt
    return adv, adv + v


@pytest.mark.parametrize("T,N", [(1, 1), (7, 3), (33, 16)])
def test_gae_matches_numpy(T, N):
    rng = np.random.default_rng(T * 100 + N)
    r, v, nv = (rng.normal(size=(T, N)).astype(np.float32) for _ in range(3))
    term = rng.random((T, N)) < 0.2
    trunc = (rng.random((T, N)) < 0.1) & ~term
    ref_a, ref_r = gae_numpy(r, v, nv, term, trunc, 0.9, 0.95)
    for adv, ret in [compute_gae(r, v, nv, term, trunc, 0.9, 0.95),
                     [x.numpy() for x in gae(*map(torch.as_tensor, (r, v, nv, term, trunc)), 0.9, 0.95,
                                             backend="torch")]]:
        np.testing.assert_allclose(adv, ref_a, atol=1e-5)
        np.testing.assert_allclose(ret, ref_r, atol=1e-5)


def test_gae_truncation_bootstraps_but_stops_recursion():
    r = np.array([[0.0], [0.0]], np.float32)
    v = np.array([[1.0], [2.0]], np.float32)
    nv = np.array([[5.0], [3.0]], np.float32)
    adv, _ = compute_gae(r, v, nv, np.zeros((2, 1), bool), np.array([[True], [False]]), 0.5, 1.0)
    assert adv[0, 0] == pytest.approx(0.5 * 5.0 - 1.0)  # bootstrapped from next_values, no A_1 term
    adv, _ = compute_gae(r, v, nv, np.array([[True], [False]]), np.zeros((2, 1), bool), 0.5, 1.0)
    assert adv[0, 0] == pytest.approx(-1.0)


def test_cosine_lr_endpoints_and_monotone():
    lrs = [cosine_lr(u, 25, 1e-5, 1e-9) for u in range(25)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e-9)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[12] == pytest.approx((1e-5 + 1e-9) / 2)
    assert cosine_lr(0, 1, 3e-4, 0.0) == 3e-4


def test_normalize_advantages():
    a = torch.tensor([1.0, 2.0, 3.0, 6.0])
    n = normalize_advantages(a)
    assert float(n.mean()) == pytest.approx(0.0, abs=1e-6) and float(n.std()) == pytest.approx(1.0, abs=1e-4)
    assert float(normalize_advantages(torch.tensor([4.0]))) == 0.0


def ppo_numpy(new, old, adv, v, vold, ret, c, guard):
    ratio = np.exp(new - old)
    if (ratio > guard).any():
        pg = (-adv * np.clip(ratio, 1 - c, 1 + c)).mean()
    else:
        pg = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - c, 1 + c)).mean()
    vc = vold + np.clip(v - vold, -c, c)
    vl = 0.5 * np.maximum((v - ret) ** 2, (vc - ret) ** 2).mean()
    kl = ((ratio - 1) - (new - old)).mean()
    clipfrac = (np.abs(ratio - 1) > c).mean()
    return pg, vl, kl, clipfrac


@pytest.mark.parametrize("spread", [0.05, 0.5, 3.0])
def test_ppo_losses_match_numpy(spread):
    rng = np.random.default_rng(7)
    B = 64
    old = rng.normal(size=B) * 3
    new = old + rng.normal(size=B) * spread
    adv, v, vold, ret = (rng.normal(size=B) for _ in range(4))
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    out = ppo_losses(t(new), t(old), t(adv), t(v), t(vold), t(ret), clip_coef=0.1, vf_coef=0.5, ratio_guard=10.0)
    pg, vl, kl, cf = ppo_numpy(new, old, adv, v, vold, ret, 0.1, 10.0)
    assert out.ratio_guarded == bool((np.exp(new - old) > 10).any())
    assert float(out.policy_loss) == pytest.approx(pg, rel=1e-9)
    assert float(out.value_loss) == pytest.approx(vl, rel=1e-9)
    assert float(out.approx_kl) == pytest.approx(kl, rel=1e-9)
    assert float(out.clipfrac) == pytest.approx(cf)
    assert float(out.loss) == pytest.approx(pg + 0.5 * vl, rel=1e-9)


def test_ratio_guard_uses_only_clipped_term():
    old = torch.zeros(2)
    new = torch.tensor([math.log(20.0), 0.0], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    out = ppo_losses(new, old, adv, torch.zeros(2), torch.zeros(2), torch.zeros(2), clip_coef=0.1)
    assert out.ratio_guarded
    assert float(out.policy_loss.detach()) == pytest.approx((-1.0 * 1.1 + 1.0 * 1.0) / 2)
    out.policy_loss.backward()
    assert float(new.grad[0]) == 0.0  # the clipped exploding ratio gives no gradient


def test_entropy_bonus_and_kl_penalty():
    z = torch.zeros(3)
    new = torch.tensor([0.0, -1.0, -2.0])
    ref = torch.tensor([0.0, -0.5, -3.0])
    ent = torch.tensor([1.0, 2.0, 3.0])
    base = ppo_losses(new, new, z, z, z, z, clip_coef=0.1)
    out = ppo_losses(new, new, z, z, z, z, clip_coef=0.1, entropy=ent, ent_coef=0.1, ref_logprob=ref, kl_coef=0.2)
    d = (ref - new).numpy()
    k3 = float(np.mean(np.exp(d) - d - 1))
    assert float(out.kl_ref) == pytest.approx(k3) and k3 > 0
    assert float(out.loss - base.loss) == pytest.approx(-0.1 * 2.0 + 0.2 * k3)


def test_explained_variance():
    y = np.array([1.0, 2.0, 3.0])
    assert explained_variance(y, y) == 1.0
    assert math.isnan(explained_variance(y, np.ones(3)))
