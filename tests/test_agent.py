"""The agent on real tiny VLMs (CPU, fp32): batched generation, one-pass evaluation, CoT split."""

import json

import numpy as np
import pytest
import torch

from vlmrl_fast.agent import Agent, PromptBatch
from vlmrl_fast.models import TINY_FAMILIES, ModelSettings, build_tiny_vlm, load_model

PROMPTS = [
    "Go.",
    "You are playing a game called number line. Move the current number to the target number.",
    "Read the target number and the current number from the image, then choose + or -.",
]
ANSWER = '{"current number": 2, "target number": 4, "thoughts": "The current number is smaller than the target number, so I choose +.", "action": "+"}'


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_agent")
    return {f: build_tiny_vlm(f, root / f, seed=1) for f in TINY_FAMILIES}


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 300, 300, 3), dtype=np.uint8)


def make_agent(path, temperature=0.7, max_new_tokens=10, preprocess="auto", **settings):
    settings.setdefault("lora", False)
    model, processor = load_model(path, ModelSettings(**settings))
    return Agent(model, processor, temperature=temperature, max_new_tokens=max_new_tokens, preprocess=preprocess)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_generation_logprobs_equal_evaluate(tiny_dirs, family):
    torch.manual_seed(0)
    agent = make_agent(tiny_dirs[family])
    batch = agent.prompt_batch(images(3), PROMPTS)
    assert (batch.attention_mask[:, -1] == 1).all()  # left padding: every prompt ends at the right
    assert (batch.attention_mask[0] == 0).any()  # the short prompt is padded
    gen = agent.generate(batch, seed=5, return_logprobs=True)
    assert len(gen.texts) == len(gen.answer_ids) == 3
    assert all(1 <= len(a) <= 10 for a in gen.answer_ids)
    assert gen.texts == agent.tokenizer.batch_decode(gen.answer_ids, skip_special_tokens=True)

    starts = [len(a) // 2 for a in gen.answer_ids]
    with torch.no_grad():
        ev = agent.evaluate(batch, gen.answer_ids, starts, lam=0.5)
    for field in ("logprob", "cot_logprob", "action_logprob", "value", "entropy"):
        t = getattr(ev, field)
        assert t.shape == (3,) and t.dtype == torch.float32 and torch.isfinite(t).all(), field
    for i, ids in enumerate(gen.answer_ids):
        torch.testing.assert_close(ev.token_logprobs[i, : len(ids)], gen.logprobs[i], atol=1e-4, rtol=0)
    assert torch.equal(ev.num_tokens, torch.tensor([len(a) for a in gen.answer_ids]))

    # Another arrangement (rows reordered, fewer rows, so other padding) gives the same numbers.
    order = [2, 0]
    with torch.no_grad():
        ev2 = agent.evaluate(batch.select(order), [gen.answer_ids[i] for i in order],
                             [starts[i] for i in order], lam=0.5)
    torch.testing.assert_close(ev2.logprob, ev.logprob[order], atol=1e-4, rtol=0)
    torch.testing.assert_close(ev2.value, ev.value[order], atol=1e-5, rtol=0)


def test_generation_is_seeded_and_leaves_the_global_rng_alone(tiny_dirs):
    agent = make_agent(tiny_dirs["llava"], temperature=1.0)
    batch = agent.prompt_batch(images(2), PROMPTS[:2])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = agent.generate(batch, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = agent.generate(batch, seed=7)
    c = agent.generate(batch, seed=8)
    assert a.answer_ids == b.answer_ids
    assert a.answer_ids != c.answer_ids


def test_greedy_generation_picks_the_argmax(tiny_dirs):
    agent = make_agent(tiny_dirs["llava"], temperature=0.0, max_new_tokens=6)
    batch = agent.prompt_batch(images(2), PROMPTS[1:])
    gen = agent.generate(batch, seed=1, return_logprobs=True)
    assert gen.answer_ids == agent.generate(batch, seed=2).answer_ids
    with torch.no_grad():
        ev = agent.evaluate(batch, gen.answer_ids, [0, 0], lam=1.0)
    # Each greedy token is the most likely one: its log-prob is the row's max (temperature 1).
    for i, ids in enumerate(gen.answer_ids):
        torch.testing.assert_close(ev.token_logprobs[i, : len(ids)], gen.logprobs[i], atol=1e-4, rtol=0)


def test_lambda_changes_only_the_cot_part(tiny_dirs):
    agent = make_agent(tiny_dirs["llava"])
    tok = agent.tokenizer
    ids = tok(ANSWER, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    text = tok.decode(ids, skip_special_tokens=True)
    key_start = text.index('"action"')
    other = '{"thoughts": "no action here"}'
    other_ids = tok(other, add_special_tokens=False)["input_ids"]
    starts = agent.action_token_starts([ids, other_ids], [text, other], np.array([key_start, -1]))
    assert starts[1] == len(other_ids)  # no action key: the whole answer is CoT
    assert '"' in tok.decode(ids[starts[0]]) and "action" in tok.decode(ids[starts[0] : starts[0] + 2])
    assert "action" not in tok.decode(ids[: starts[0]])

    batch = agent.prompt_batch(images(2), PROMPTS[:2])
    with torch.no_grad():
        lo = agent.evaluate(batch, [ids, other_ids], starts, lam=0.2)
        hi = agent.evaluate(batch, [ids, other_ids], starts, lam=1.0)
    torch.testing.assert_close(lo.action_logprob, hi.action_logprob)
    torch.testing.assert_close(lo.cot_logprob, hi.cot_logprob)
    torch.testing.assert_close(hi.logprob - lo.logprob, 0.8 * lo.cot_logprob)
    assert lo.action_logprob[0] < 0 and lo.action_logprob[1] == 0
    torch.testing.assert_close(lo.logprob[1], 0.2 * lo.token_logprobs[1].sum())
    total = lo.token_logprobs[0].sum()
    torch.testing.assert_close(lo.cot_logprob[0] + lo.action_logprob[0], total)


def test_token_offsets_cover_the_decoded_text(tiny_dirs):
    agent = make_agent(tiny_dirs["qwen2_vl"])
    ids = agent.tokenizer("Ünï ✓ " + ANSWER, add_special_tokens=False)["input_ids"]
    text = agent.tokenizer.decode(ids)
    spans = agent.token_offsets(ids)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a <= b for a, b in spans) and all(spans[i][1] <= spans[i + 1][1] for i in range(len(spans) - 1))


def test_trained_agent_stops_at_eos_and_answers_valid_json(tiny_dirs):
    """A few optimizer steps on one answer: generation then reproduces it and stops at EOS."""
    torch.manual_seed(0)
    agent = make_agent(tiny_dirs["llava"], temperature=0.0, max_new_tokens=20)
    tok = agent.tokenizer
    short = '{"thoughts": "go", "action": "+"}'
    target = tok(short, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    batch = agent.prompt_batch(images(2), PROMPTS[:2])
    opt = torch.optim.Adam(agent.model.parameters(), lr=5e-3)
    for _ in range(40):
        ev = agent.evaluate(batch, [target, target], [0, 0], lam=1.0)
        loss = -ev.logprob.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen = agent.generate(batch)
    assert gen.answer_ids == [target, target]  # EOS kept as the last answer id
    assert gen.texts == [short, short]  # ... and not in the text
    assert json.loads(gen.texts[0])["action"] == "+"


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_lora_backward_reaches_adapters_and_value_head_only(tiny_dirs, family):
    agent = make_agent(tiny_dirs[family], lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    agent.train()
    batch = agent.prompt_batch(images(2), PROMPTS[:2])
    answers = [[25, 26, 27], [28, 29]]
    ev = agent.evaluate(batch, answers, [1, 2], lam=0.5)
    (-(ev.logprob.sum()) + ev.value.pow(2).sum()).backward()
    trainable = {n: p for n, p in agent.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("value_head.") for n in trainable)
    assert any(n.startswith("value_head.") for n in trainable)
    # lora_B starts at zero, so lora_A gets no gradient on the first step; lora_B and the head do.
    for name, p in trainable.items():
        if "lora_A" in name:
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    frozen = [p for n, p in agent.named_parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)


@pytest.mark.parametrize("lora", [False, True])
def test_save_and_load_round_trip(tiny_dirs, tmp_path, lora):
    agent = make_agent(tiny_dirs["llava"], lora=lora, lora_r=4, lora_dropout=0.0)
    with torch.no_grad():  # make the state differ from a fresh load
        for n, p in agent.named_parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    agent.eval()
    batch = agent.prompt_batch(images(2), PROMPTS[:2])
    with torch.no_grad():
        before = agent.evaluate(batch, [[25, 26], [27]], [1, 0], lam=0.5)
    agent.save(tmp_path / "ckpt")
    loaded = Agent.load(tmp_path / "ckpt", ModelSettings(lora=False))
    loaded.eval()
    assert loaded.temperature == agent.temperature
    with torch.no_grad():
        after = loaded.evaluate(loaded.prompt_batch(images(2), PROMPTS[:2]), [[25, 26], [27]], [1, 0], lam=0.5)
    torch.testing.assert_close(after.logprob, before.logprob)
    torch.testing.assert_close(after.value, before.value)
    if lora:
        assert any(p.requires_grad for n, p in loaded.model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("lora", [False, True])
def test_save_writes_a_given_full_state_dict(tiny_dirs, tmp_path, lora):
    """With sharded weights (FSDP, ZeRO-3) the trainer gathers the agent's full state dict and hands it
    to save: the files hold those values, not the process's local (partitioned) parameters."""
    agent = make_agent(tiny_dirs["llava"], lora=lora, lora_r=4, lora_dropout=0.0)
    trainable = [n for n, p in agent.named_parameters() if p.requires_grad]
    full = {k: v.detach().clone() for k, v in agent.state_dict().items()}
    for name in trainable:
        full[name] += 0.25
    agent.save(tmp_path / "ckpt", state_dict=full)
    loaded = Agent.load(tmp_path / "ckpt", ModelSettings(lora=False)).state_dict()
    live = agent.state_dict()
    assert any(n.startswith("value_head.") for n in trainable) and any(n.startswith("model.") for n in trainable)
    for name in trainable:
        assert torch.equal(loaded[name], full[name]), name
        assert not torch.equal(loaded[name], live[name]), name


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_precomputed_vision_inputs_give_the_same_batch(tiny_dirs, family):
    agent = make_agent(tiny_dirs[family], preprocess="hf")
    obs = images(2, seed=3)
    ref = agent.prompt_batch(obs, PROMPTS[:2])
    vision = agent.processor.image_processor(list(obs), return_tensors="pt")
    got = agent.prompt_batch(None, PROMPTS[:2], vision=vision)
    assert torch.equal(got.input_ids, ref.input_ids)
    assert torch.equal(got.attention_mask, ref.attention_mask)
    assert got.vision.keys() == ref.vision.keys()
    for key in ref.vision:
        assert torch.equal(got.vision[key], ref.vision[key]), key


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_native_image_pipeline_gives_the_processors_batch(tiny_dirs, family):
    """preprocess='auto' runs the Rust pipeline for every tiny family (LLaVA's CLIP, LLaVA-NeXT's
    tiling, Qwen2-VL), and the batch and the policy's log-probs equal those of preprocess='hf'."""
    auto = make_agent(tiny_dirs[family])
    hf = Agent(auto.model, auto.processor, temperature=auto.temperature, preprocess="hf")
    assert hf.image_pipeline is None
    assert auto.image_pipeline is not None and auto.image_pipeline.native
    obs = images(3, seed=5)
    got, ref = auto.prompt_batch(obs, PROMPTS), hf.prompt_batch(obs, PROMPTS)
    assert torch.equal(got.input_ids, ref.input_ids)
    assert torch.equal(got.attention_mask, ref.attention_mask)
    assert got.vision.keys() == ref.vision.keys()
    for key in ref.vision:
        if ref.vision[key].is_floating_point():
            # Same resampling; only the float rounding of rescale + normalize differs (a few ulp).
            torch.testing.assert_close(got.vision[key], ref.vision[key], atol=1e-5, rtol=0)
        else:
            assert torch.equal(got.vision[key], ref.vision[key]), key
    auto.eval()
    with torch.no_grad():
        a = auto.evaluate(got, [[25, 26], [27], [28, 29, 30]], [1, 0, 2], lam=0.5)
        b = auto.evaluate(ref, [[25, 26], [27], [28, 29, 30]], [1, 0, 2], lam=0.5)
    torch.testing.assert_close(a.logprob, b.logprob, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.value, b.value, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_bf16_model_gets_bf16_pixel_values_equal_to_its_own_cast(tiny_dirs, family):
    """Every family: the LLaVA processors read the pixel values through numpy (no bfloat16) when they
    expand the image placeholders; a bf16 batch must still go through (it failed on the first GPU run)."""
    auto = make_agent(tiny_dirs[family], dtype="bfloat16")
    hf = Agent(auto.model, auto.processor, preprocess="hf")
    assert auto.image_pipeline.dtype == torch.bfloat16
    obs = images(2, seed=7)
    got, ref = auto.prompt_batch(obs, PROMPTS[:2]), hf.prompt_batch(obs, PROMPTS[:2])
    assert got.vision["pixel_values"].dtype == torch.bfloat16
    # What the model computes with: its cast of the processor's float32 values (a few float32 ulp
    # apart from ours before rounding, so at most one bf16 step apart after it).
    torch.testing.assert_close(got.vision["pixel_values"].float(), ref.vision["pixel_values"].to(torch.bfloat16).float(),
                               atol=2e-2, rtol=1e-2)
    auto.eval()
    with torch.no_grad():
        ev = auto.evaluate(got, [[25, 26], [27]], [1, 0], lam=0.5)
    assert torch.isfinite(ev.logprob).all()


def test_preprocess_modes(tiny_dirs):
    model, processor = load_model(tiny_dirs["llava_next"], ModelSettings(lora=False))
    assert Agent(model, processor, preprocess="native").image_pipeline.native
    # Canvases that are not multiples of the tile: the native tiling does not take them.
    ip = processor.image_processor
    ip.image_grid_pinpoints = [[h + 1, w] for h, w in ip.image_grid_pinpoints]
    with pytest.raises(ValueError, match="preprocess='native' is not available: LlavaNextImageProcessor"):
        Agent(model, processor, preprocess="native")
    with pytest.raises(ValueError, match="preprocess must be one of"):
        Agent(model, processor, preprocess="rust")
    model, processor = load_model(tiny_dirs["qwen2_vl"], ModelSettings(lora=False))
    assert Agent(model, processor, preprocess="native").image_pipeline.native


def test_bad_input_is_rejected(tiny_dirs):
    agent = make_agent(tiny_dirs["llava"])
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        agent.prompt_batch(images(2), ["x"])
    with pytest.raises(ValueError, match="image 0 must be uint8"):
        agent.prompt_batch(images(1).astype(np.float32), ["x"])
    batch = agent.prompt_batch(images(2), PROMPTS[:2])
    with pytest.raises(ValueError, match="evaluate: batch has 2 rows"):
        agent.evaluate(batch, [[1]], [0], lam=0.5)
    with pytest.raises(IndexError, match="select"):
        batch.select([0, 5])
    with pytest.raises(ValueError, match="temperature"):
        Agent(agent.model, agent.processor, temperature=-1.0)
    assert isinstance(batch.select([1]), PromptBatch)


def test_gradient_checkpointing_recomputes_layers_in_the_eval_mode_update(tiny_dirs):
    """The policy stays in eval mode in the update; transformers checkpoints a layer only in train mode,
    so Agent.evaluate switches the checkpointed layers (and only them) to train mode while gradients are
    recorded: each decoder layer then runs twice (forward + recompute), the gradients are unchanged."""
    results = []
    for gc in (False, True):
        torch.manual_seed(0)
        agent = make_agent(tiny_dirs["llava"], lora_r=4, lora_dropout=0.0, gradient_checkpointing=gc)
        agent.eval()
        batch = agent.prompt_batch(images(2), PROMPTS[:2])
        gen = agent.generate(batch, seed=3)
        layers = [m for m in agent.model.modules() if type(m).__name__ == "LlamaDecoderLayer"]
        calls = []
        hook = layers[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
        ev = agent.evaluate(batch, gen.answer_ids, [0, 0], lam=0.5)
        ev.logprob.sum().backward()
        hook.remove()
        assert not any(m.training for m in agent.model.modules())  # eval mode restored everywhere
        grads = {n: p.grad.clone() for n, p in agent.model.named_parameters() if p.grad is not None}
        results.append((len(calls), grads))
    assert results[0][0] == 1 and results[1][0] == 2
    assert results[0][1].keys() == results[1][1].keys() and results[0][1]
    for name, g in results[0][1].items():
        torch.testing.assert_close(g, results[1][1][name], atol=1e-6, rtol=1e-4)
