"""`--model tiny:FAMILY` (vlmrl_fast.models.families): every family builds from real transformers classes,
and generation's per-token log-probs equal the update's (one forward pass) within 1e-4 in fp32 on the CPU;
a text-only tiny causal LM (`tiny:text`) plays and trains on a Python env that has only text."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmrl_fast.agent import Agent
from vlmrl_fast.cli import main
from vlmrl_fast.models import ModelSettings, build_tiny_model, is_text_only, load_model

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Go.", "You play Count To. You are at 1; the goal is 3. Step \"down\" or \"up\" by one."]
NEW = ["qwen2_5_vl", "qwen3_vl", "gemma3", "idefics3", "text"]
NATIVE = ["qwen2_5_vl", "qwen3_vl", "gemma3"]  # processors of a kind the native image pipeline covers


def agent_of(path, temperature=0.7):
    model, processor = load_model(path, ModelSettings(lora=False))
    return Agent(model, processor, temperature=temperature, max_new_tokens=8)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny_model(f, root / f, seed=1) for f in NEW}


def test_the_new_families_are_real_transformers_classes(tiny_dirs):
    from transformers import AutoConfig

    names = {f: AutoConfig.from_pretrained(tiny_dirs[f]).architectures[0] for f in NEW}
    assert names == {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration",
                     "gemma3": "Gemma3ForConditionalGeneration", "idefics3": "Idefics3ForConditionalGeneration",
                     "text": "LlamaForCausalLM"}


@pytest.mark.parametrize("family", NEW)
def test_generation_logprobs_equal_the_updates(tiny_dirs, family):
    torch.manual_seed(0)
    agent = agent_of(tiny_dirs[family])
    assert agent.text_only == (family == "text") == is_text_only(agent.processor)
    frames = np.random.default_rng(0).integers(0, 256, (2, 80, 120, 3), dtype=np.uint8)  # any size
    batch = agent.prompt_batch(frames, PROMPTS)
    gen = agent.generate(batch, seed=3, return_logprobs=True)
    starts = [len(a) // 2 for a in gen.answer_ids]
    with torch.no_grad():
        ev = agent.evaluate(batch, gen.answer_ids, starts, lam=0.5)
    for i, ids in enumerate(gen.answer_ids):
        assert len(ids) >= 1
        torch.testing.assert_close(ev.token_logprobs[i, : len(ids)], gen.logprobs[i], atol=1e-4, rtol=0)
    # one update step moves the policy: the loss reaches the weights and the value head
    agent.train()
    ev = agent.evaluate(batch, gen.answer_ids, starts, lam=0.5)
    (-(ev.logprob.sum()) + ev.value.pow(2).sum()).backward()
    assert all(p.grad is not None for p in agent.value_head.parameters())
    grads = [p.grad for p in agent.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("family", NATIVE)
def test_native_image_pipeline_equals_the_hf_processor(tiny_dirs, family):
    auto = agent_of(tiny_dirs[family])
    hf = Agent(auto.model, auto.processor, temperature=auto.temperature, preprocess="hf")
    assert auto.image_pipeline is not None and auto.image_pipeline.native and hf.image_pipeline is None
    obs = np.random.default_rng(5).integers(0, 256, (3, 300, 300, 3), dtype=np.uint8)
    prompts = [*PROMPTS, "Read the image."]
    got, ref = auto.prompt_batch(obs, prompts), hf.prompt_batch(obs, prompts)
    assert torch.equal(got.input_ids, ref.input_ids) and torch.equal(got.attention_mask, ref.attention_mask)
    assert got.vision.keys() == ref.vision.keys()
    for key in ref.vision:
        if ref.vision[key].is_floating_point():
            torch.testing.assert_close(got.vision[key], ref.vision[key], atol=1e-5, rtol=0)
        else:
            assert torch.equal(got.vision[key], ref.vision[key]), key
    with torch.no_grad():
        a = auto.evaluate(got, [[25, 26], [27], [28, 29, 30]], [1, 0, 2], lam=0.5)
        b = auto.evaluate(ref, [[25, 26], [27], [28, 29, 30]], [1, 0, 2], lam=0.5)
    torch.testing.assert_close(a.logprob, b.logprob, atol=1e-4, rtol=0)


def test_idefics3_falls_back_to_its_processor(tiny_dirs):
    from vlmrl_fast.preprocess import ImagePipeline

    agent = agent_of(tiny_dirs["idefics3"])
    assert agent.image_pipeline is None
    with pytest.warns(UserWarning, match="Idefics3ImageProcessor(Pil)? has no native pipeline"):
        assert not ImagePipeline.from_processor(agent.processor).native


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "gemma3", "idefics3"])
def test_each_new_family_runs_rollout_and_ppo_update(tiny_dirs, tmp_path, capsys, family):
    run_dir = tmp_path / "run"
    code = main(["train", "--model", str(tiny_dirs[family]), "--updates", "1", "--warm-start", "none",
                 "--eval-episodes", "0", "--eval-every", "0", "--num-envs", "2", "--num-steps", "2",
                 "--max-new-tokens", "6", "--minibatch-size", "2", "--update-epochs", "1", "--no-progress",
                 "--run-dir", str(run_dir)])
    assert code == 0, capsys.readouterr().err[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    row = [r for r in rows if r.get("update") == 1][0]
    assert np.isfinite(row["losses/policy_loss"]) and np.isfinite(row["losses/approx_kl"])


def test_tiny_text_agent_trains_on_a_text_env(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "--env", "byo_envs:CountTo-v0", "--prompt-template", str(REPO / "tests" / "count_to.toml"),
                 "--model", "tiny:text", "--updates", "2", "--sft-episodes", "2", "--sft-epochs", "1",
                 "--eval-episodes", "2", "--eval-every", "0", "--num-envs", "2", "--num-steps", "2",
                 "--max-new-tokens", "8", "--minibatch-size", "2", "--update-epochs", "1", "--no-progress",
                 "--perception-steps", "2", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["updates_done"] == 2 and summary["model"] == "tiny:text"
    # the perception stage (asked for) needs state fields and images: skipped, saying why
    assert summary["perception_stage"].startswith("skipped: ") and "state fields" in summary["perception_stage"]
    agent = Agent.load(run_dir / "agent", ModelSettings(lora=False))
    assert agent.text_only and type(agent.model).__name__ == "LlamaForCausalLM"


def test_unknown_family_is_one_line(capsys, tmp_path):
    code = main(["train", "--model", "tiny:nope", "--run-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "tiny:nope" in err and len([ln for ln in err.splitlines() if ln.startswith("vlmrl")]) == 1


def _gemma3(backend, **kw):
    from transformers import Gemma3ImageProcessor, Gemma3ImageProcessorPil

    from preprocess_cases import siglip

    cls = Gemma3ImageProcessorPil if backend == "pil" else Gemma3ImageProcessor
    return cls(**dict(siglip(896), **kw))  # google/gemma-3-*-it: SigLIP-896, mean = std = 0.5


def _qwen3_vl(backend):
    from transformers import Qwen2VLImageProcessor, Qwen2VLImageProcessorPil

    cls = Qwen2VLImageProcessorPil if backend == "pil" else Qwen2VLImageProcessor
    # Qwen/Qwen3-VL-*-Instruct: 16 px patches, mean = std = 0.5
    return cls(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
               size={"shortest_edge": 64 * 64, "longest_edge": 16 * 16 * 1280})


@pytest.mark.parametrize("make", [_gemma3, _qwen3_vl], ids=["gemma3", "qwen3_vl"])
@pytest.mark.parametrize("backend", ["pil", "tv"])
def test_hub_sized_processors_of_the_new_families_are_native_and_equal(make, backend):
    from preprocess_cases import hf_outputs, synthetic_obs
    from vlmrl_fast.preprocess import ImagePipeline

    ip = make(backend)
    pipeline = ImagePipeline.from_processor(ip)
    assert pipeline.native
    obs = synthetic_obs(2, 300, 300)
    got, ref = pipeline(obs), hf_outputs(ip, obs)
    torch.testing.assert_close(got["pixel_values"], ref["pixel_values"], atol=1e-5, rtol=0)
    if "image_grid_thw" in ref:
        assert torch.equal(got["image_grid_thw"], ref["image_grid_thw"])


def test_gemma3_pan_and_scan_falls_back():
    from vlmrl_fast.preprocess import ImagePipeline

    with pytest.warns(UserWarning, match="pan-and-scan"):
        assert not ImagePipeline.from_processor(_gemma3("tv", do_pan_and_scan=True)).native
