"""One PPO iteration of real-size VLMs on one GPU, phase by phase, against the paper's one-answer-at-a-time rollout.

    python bench/gpu/scale.py --out OUT_DIR [--models qwen2_vl_2b,llava_next_mistral_7b] [--num-envs 16]
    python bench/gpu/scale.py --out OUT_DIR --smoke      # toy sizes on the CPU, in seconds (make test runs it)

No weights can be downloaded, and timings and memory do not need trained ones: each model is its published
architecture (the config values below, from the models' config.json on the Hugging Face hub) with random
weights in bfloat16, the paper's LoRA (r=128, alpha=256, all linear layers of the language model) and
gradient checkpointing. The tokenizer is the embedded tiny VLM's (its ids are a subset of the real vocabulary,
which the embedding and the output head keep at full size); the image processors are the published ones, so
a 300x300 env frame becomes the prompt length the real model sees.

Answers are forced to `--max-new-tokens` (256, the paper's CoT length): EOS joins the image placeholders in
`Agent.suppressed_token_ids`, which generate suppresses and evaluate masks alike, so the sampling distribution
and the log-probs PPO uses stay the same distribution (the model simply never stops early).

Per model (one row of the JSON):
1. one PPO iteration of the real trainer code (`vlmrl_fast.ppo.train_update`: batched rollout of num_envs envs
   for num_steps steps, log-prob evaluation, GAE, update_epochs of minibatches; the paper's Points24 settings
   from configs/points24.toml otherwise): seconds per phase (prompt, generate, logprob, env, update),
   generated tokens/s, peak GPU memory, and whether gradient checkpointing actually ran in the update;
2. the same rollout one answer at a time (the paper's way: `collect_rollout` on one env, `--serial-envs`
   of them in turn): `batched_vs_one_at_a_time` = batched env steps/s / one-at-a-time env steps/s;
3. generation variants on one batch of num_envs prompts, each against plain `generate` on the same batch:
   SDPA (transformers' default) vs eager attention, flash-attention 2 where `flash_attn` is installed, static
   KV cache + torch.compile, and transformers' continuous batching (`generate_batch`, text only). Each variant
   is wrapped: one that fails records its error and the run goes on.
The JSON (OUT_DIR/scale_<device>.json) is rewritten after every measurement, so a run cut short keeps what it
measured; `--budget-s` skips (and says so) the optional stages that would not fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import inspect
import json
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("vlmrl_fast") is None:  # a checkout without the package installed
    sys.path.insert(0, str(ROOT / "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# -- the published architectures ---------------------------------------------------------------------------
# Qwen/Qwen2-VL-2B-Instruct config.json: Qwen2 language model with M-RoPE, 675M-parameter vision tower.
QWEN2_VL_2B = {
    "family": "qwen2_vl",
    "hub_id": "Qwen/Qwen2-VL-2B-Instruct",
    "text": {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
             "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32768,
             "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": True,
             "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}},
    "vision": {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "mlp_ratio": 4, "num_heads": 16,
               "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
    # Qwen2-VL's preprocessor_config.json
    "image": {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16384, "patch_size": 14, "merge_size": 2,
              "temporal_patch_size": 2},
}
# llava-hf/llava-v1.6-mistral-7b-hf config.json: Mistral-7B-Instruct-v0.2 text model (MistralConfig defaults
# for hidden size, layers, heads written out), CLIP ViT-L/14 at 336 px, anyres grid pinpoints.
LLAVA_NEXT_MISTRAL_7B = {
    "family": "llava_next",
    "hub_id": "llava-hf/llava-v1.6-mistral-7b-hf",
    "text": {"vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
             "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False, "sliding_window": None,
             "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}},
    "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
               "image_size": 336, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu"},
    "llava": {"image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
              "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
              "projector_hidden_act": "gelu"},
    "image": {"shortest_edge": 336, "crop_size": 336},
}
MODELS = {"qwen2_vl_2b": QWEN2_VL_2B, "llava_next_mistral_7b": LLAVA_NEXT_MISTRAL_7B}
VARIANTS = ("plain_generate", "eager_attention", "flash_attention_2", "static_cache_compile",
            "continuous_batching")


def toy(spec: dict) -> dict:
    """The same family at a size a CPU runs in seconds (--smoke): every code path of the real size."""
    spec = json.loads(json.dumps(spec))
    spec["text"].update(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2)
    if spec["family"] == "qwen2_vl":
        spec["text"]["rope_parameters"]["mrope_section"] = [2, 3, 3]  # head_dim 16: half 8
        spec["vision"].update(depth=2, embed_dim=64, hidden_size=64, num_heads=4)
        spec["image"].update(max_pixels=112 * 112)
    else:
        spec["vision"].update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=56, projection_dim=64)
        spec["llava"]["image_grid_pinpoints"] = [[56, 112], [112, 56], [112, 112]]
        spec["image"].update(shortest_edge=56, crop_size=56)
    return spec


# -- building a model and its agent ------------------------------------------------------------------------
def _processor(spec: dict, tokenizer):
    from vlmrl_fast.models.tiny import _CLIP_MEAN, _CLIP_STD, chat_template

    img = spec["image"]
    if spec["family"] == "qwen2_vl":
        from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

        size = {"shortest_edge": img["min_pixels"], "longest_edge": img["max_pixels"]}
        kw = dict(size=size, patch_size=img["patch_size"], merge_size=img["merge_size"],
                  temporal_patch_size=img["temporal_patch_size"])
        cls = Qwen2VLProcessor
        try:
            video = Qwen2VLVideoProcessor(**kw)
        except ImportError:  # transformers 5.17 wants torchvision for it; env frames are images only
            from transformers.video_processing_utils import BaseVideoProcessor

            class ImagesOnlyProcessor(Qwen2VLProcessor):
                def check_argument_for_proper_class(self, argument_name, argument):
                    if argument_name == "video_processor":
                        return type(argument)
                    return super().check_argument_for_proper_class(argument_name, argument)

            cls, video = ImagesOnlyProcessor, BaseVideoProcessor()
        return cls(image_processor=Qwen2VLImageProcessor(**kw), tokenizer=tokenizer, video_processor=video,
                   chat_template=chat_template("qwen2_vl"))
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": img["shortest_edge"]}, crop_size={"height": img["crop_size"], "width": img["crop_size"]},
        image_grid_pinpoints=spec["llava"]["image_grid_pinpoints"], image_mean=_CLIP_MEAN, image_std=_CLIP_STD)
    return LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                              patch_size=spec["vision"]["patch_size"],
                              vision_feature_select_strategy=spec["llava"]["vision_feature_select_strategy"],
                              num_additional_image_tokens=1, chat_template=chat_template("llava_next"))


def _config(spec: dict, tokenizer):
    ids = tokenizer.convert_tokens_to_ids
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    if spec["family"] == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        config = Qwen2VLConfig(text_config={**spec["text"], **special}, vision_config=dict(spec["vision"]),
                               image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                               vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
                               tie_word_embeddings=spec["text"]["tie_word_embeddings"])
        return Qwen2VLForConditionalGeneration, config
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, MistralConfig

    config = LlavaNextConfig(vision_config=CLIPVisionConfig(**spec["vision"]).to_dict(),
                             text_config=MistralConfig(**spec["text"], **special).to_dict(),
                             image_token_index=ids("<image>"), tie_word_embeddings=False,
                             image_seq_length=(spec["vision"]["image_size"] // spec["vision"]["patch_size"]) ** 2,
                             **spec["llava"])
    return LlavaNextForConditionalGeneration, config


def build_agent(spec: dict, cfg, device: str):
    """Random-weight bf16 model of `spec` on `device`, LoRA and gradient checkpointing as cfg says (the
    trainer's own helpers), wrapped in the trainer's Agent with answers forced to cfg.max_new_tokens."""
    from vlmrl_fast.agent import Agent
    from vlmrl_fast.models.corpus import corpus
    from vlmrl_fast.models.loading import _enable_checkpointing, apply_lora
    from vlmrl_fast.models.settings import ModelSettings
    from vlmrl_fast.models.tiny import train_tokenizer

    tokenizer = train_tokenizer(corpus())
    processor = _processor(spec, tokenizer)
    cls, config = _config(spec, tokenizer)
    settings = ModelSettings(dtype=cfg.dtype, device=device, lora=cfg.lora, lora_r=cfg.lora_r,
                             lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                             gradient_checkpointing=cfg.gradient_checkpointing)
    torch.manual_seed(cfg.seed)
    with torch.device(device):  # initialised where it runs: seconds for 7B on a GPU
        model = cls._from_config(config, dtype=settings.torch_dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    if settings.gradient_checkpointing:  # as vlmrl_fast.models.load_model does
        _enable_checkpointing(model)
        model.enable_input_require_grads()
    if settings.lora:
        model = apply_lora(model, settings)
    agent = Agent(model, processor, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                  preprocess=cfg.preprocess)
    # min = max = max_new_tokens: EOS is removed from the policy in generate and evaluate alike
    agent.suppressed_token_ids = sorted(set(agent.suppressed_token_ids) | {agent.eos_token_id})
    return agent.eval()


# -- measuring ---------------------------------------------------------------------------------------------
def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _error(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            "traceback_tail": traceback.format_exc()[-1500:]}


class AnswerLengths:
    """Counts the answer lengths of every `agent.generate` call (the forcing's check)."""

    def __init__(self, agent):
        self.agent, self.lengths = agent, []
        self.inner = agent.generate

    def __enter__(self):
        def counted(*args, **kwargs):
            gen = self.inner(*args, **kwargs)
            self.lengths.extend(len(a) for a in gen.answer_ids)
            return gen
        self.agent.generate = counted
        return self

    def __exit__(self, *exc):
        del self.agent.generate  # the instance attribute: back to the class method


class LayerCalls:
    """Forward calls inside the first decoder layer while grad is on: 2 per minibatch when gradient
    checkpointing recomputes it in the backward pass, 1 when it does not. The hook sits on the layer's
    first sub-module: transformers checkpoints the layer's `forward`, so the layer's own hooks run once."""

    def __init__(self, agent):
        layers = [m for m in agent.base_model.modules() if type(m).__name__.endswith("DecoderLayer")]
        self.layer, self.calls, self.handle = next(layers[0].children()), 0, None

    def __enter__(self):
        def count(_m, _a):
            if torch.is_grad_enabled():
                self.calls += 1
        self.handle = self.layer.register_forward_pre_hook(count)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def ppo_iteration(agent, cfg, device: str, row: dict) -> None:
    """One `train_update` of the trainer (rollout, GAE, PPO epochs) on fresh envs."""
    from gymnasium.vector import AutoresetMode

    from vlmrl_fast import distributed, make_vec
    from vlmrl_fast.ppo import train_update

    accelerator = distributed.make_accelerator(cfg, device)
    params = [p for p in agent.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    wrapped, optimizer = distributed.prepare(accelerator, agent, optimizer, micro_batch_size=cfg.minibatch_size)
    envs = make_vec(cfg.env, cfg.num_envs, seed=cfg.seed, autoreset_mode=AutoresetMode.SAME_STEP)
    try:
        _reset_peak()
        with AnswerLengths(agent) as lengths, LayerCalls(agent) as layer:
            t0 = time.perf_counter()
            record = train_update(agent, optimizer, accelerator, envs, cfg, 0, wrapped=wrapped)
            _sync()
            wall = time.perf_counter() - t0
        row["peak_memory_gb"] = _peak_gb()
        row["seconds"] = {k: record[f"time/{k}_s"] for k in ("prompt", "generate", "logprob", "update", "env")}
        row["iteration_s"] = wall
        row["tokens_per_s"] = record["perf/tokens_per_s"]
        row["env_steps_per_s"] = record["perf/env_steps_per_s"]
        row["answer_tokens"] = {"min": min(lengths.lengths), "max": max(lengths.lengths),
                                "count": len(lengths.lengths)}
        minibatches = record["losses/epochs"] * cfg.batch_size / cfg.minibatch_size
        row["gradient_checkpointing_active"] = bool(layer.calls >= 2 * minibatches)
        row["decoder_layer_forwards_with_grad"] = {"calls": layer.calls, "minibatches": minibatches}
        row["ppo"] = {k: record[k] for k in ("losses/policy_loss", "losses/value_loss", "losses/approx_kl",
                                             "losses/epochs", "charts/invalid_rate") if k in record}
    finally:
        envs.close()
        optimizer.zero_grad(set_to_none=True)
        accelerator.free_memory()
        del optimizer, wrapped, accelerator
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def one_at_a_time(agent, cfg, envs_count: int) -> dict:
    """The paper's rollout: the same collect_rollout on one env at a time, `envs_count` envs in turn."""
    from gymnasium.vector import AutoresetMode

    from vlmrl_fast import make_vec
    from vlmrl_fast.ppo import derive_seed
    from vlmrl_fast.rollout import collect_rollout

    seconds = {"prompt": 0.0, "generate": 0.0, "logprob": 0.0, "env": 0.0}
    tokens = 0
    _reset_peak()
    for i in range(envs_count):
        env = make_vec(cfg.env, 1, seed=derive_seed(cfg.seed, 0xA7, i), autoreset_mode=AutoresetMode.SAME_STEP)
        try:
            obs, infos = env.reset(seed=derive_seed(cfg.seed, 0xA8, i))
            ro = collect_rollout(agent, env, cfg.env, np.asarray(obs), infos, num_steps=cfg.num_steps, cot=cfg.cot,
                                 state_text=cfg.state_text, lam=cfg.thought_coef, fallback=cfg.invalid_fallback,
                                 fallback_action=cfg.fallback_action, invalid_penalty=cfg.invalid_penalty,
                                 seed=derive_seed(cfg.seed, 0xA9, i))
        finally:
            env.close()
        tokens += ro.tokens_generated
        for k in seconds:
            seconds[k] += ro.seconds[k]
    total = sum(seconds.values())
    return {"envs": envs_count, "num_steps": cfg.num_steps, "seconds": seconds,
            "env_steps_per_s": envs_count * cfg.num_steps / max(total, 1e-9),
            "tokens_per_s": tokens / max(seconds["generate"], 1e-9), "peak_memory_gb": _peak_gb()}


# -- generation variants -----------------------------------------------------------------------------------
def _variant_batch(agent, cfg):
    from gymnasium.vector import AutoresetMode

    from vlmrl_fast import make_vec
    from vlmrl_fast.rollout import prompt_batch, render_prompts, split_infos

    envs = make_vec(cfg.env, cfg.num_envs, seed=cfg.seed + 1, autoreset_mode=AutoresetMode.SAME_STEP)
    try:
        obs, infos = envs.reset(seed=cfg.seed + 1)
        prompts = render_prompts(cfg.env, split_infos(infos, cfg.num_envs), cfg.cot, cfg.state_text)
        return prompt_batch(agent, np.asarray(obs), prompts)
    finally:
        envs.close()


class GenerationOverrides:
    """Extra `generate` keyword arguments (a cache implementation, a compile config) for the duration,
    on top of the agent's own sampling settings (the same distribution)."""

    def __init__(self, agent, **extra):
        self.agent, self.extra = agent, extra

    def __enter__(self):
        base = type(self.agent)._generation_kwargs.__get__(self.agent)
        self.agent._generation_kwargs = lambda: {**base(), **self.extra}
        return self

    def __exit__(self, *exc):
        del self.agent._generation_kwargs


class AttentionImplementation:
    """The base model's attention implementation switched for the duration."""

    def __init__(self, agent, name: str):
        self.model, self.name = agent.base_model, name

    def __enter__(self):
        self.before = self.model.config._attn_implementation
        self.model.set_attn_implementation(self.name)
        return self

    def __exit__(self, *exc):
        self.model.set_attn_implementation(self.before)


def _timed_generate(agent, batch, seed: int) -> dict:
    _reset_peak()
    t0 = time.perf_counter()
    gen = agent.generate(batch, seed=seed)
    _sync()
    secs = time.perf_counter() - t0
    tokens = sum(len(a) for a in gen.answer_ids)
    return {"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / max(secs, 1e-9), "peak_memory_gb": _peak_gb()}


def _compile_config(device: str):
    from transformers import CompileConfig

    if device == "cpu":  # the smoke test: dynamo traces, no code generation (no C++ compiler needed)
        config = CompileConfig(backend="eager", fullgraph=False)
        config._compile_all_devices = True
        return config
    return CompileConfig(fullgraph=False, mode="reduce-overhead")


def _continuous_batching(agent, batch, cfg) -> dict:
    """transformers' continuous batching: token ids only (image placeholders embedded as text, no vision
    tower), the agent's sampling settings, the same prompt and answer lengths."""
    from transformers import GenerationConfig

    ids = [row[mask.bool()].tolist() for row, mask in zip(batch.input_ids.cpu(), batch.attention_mask.cpu())]
    kw = agent._generation_kwargs()
    gen_cfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, do_sample=kw["do_sample"],
                               temperature=kw["temperature"], top_k=kw["top_k"], top_p=kw["top_p"],
                               eos_token_id=kw["eos_token_id"], pad_token_id=kw["pad_token_id"])
    from transformers import ContinuousBatchingConfig

    # flash attention is not assumed installed (its paged SDPA path instead); on the CPU a small cache,
    # since the default sizes it from the memory there is
    sizes = dict(num_blocks=16, max_batch_tokens=256) if batch.input_ids.device.type == "cpu" else {}
    wanted = dict(auto_switch_to_flash=False, **sizes)
    accepted = inspect.signature(ContinuousBatchingConfig).parameters  # the fields differ across 5.x releases
    cb_cfg = ContinuousBatchingConfig(**{k: v for k, v in wanted.items() if k in accepted})
    model = agent.base_model
    _reset_peak()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate_batch(inputs=ids, generation_config=gen_cfg, continuous_batching_config=cb_cfg,
                                   progress_bar=False)
    _sync()
    secs = time.perf_counter() - t0
    tokens = sum(len(o.generated_tokens) for o in out.values())
    errors = [o.error for o in out.values() if getattr(o, "error", None)]
    res = {"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / max(secs, 1e-9), "peak_memory_gb": _peak_gb(),
           "note": "text only: prompt token ids with image placeholders embedded as text (no vision tower); "
                   "includes the manager's start and warm-up"}
    if errors:
        res["request_errors"] = errors[:3]
    return res


def generation_variants(agent, cfg, device: str, names: list[str], row: dict, save: Callable[[], None],
                        time_left: Callable[[], float]) -> None:
    variants = row["generation_variants"] = {}
    batch = _variant_batch(agent, cfg)
    variants["prompt_tokens"] = int(batch.input_ids.shape[1])
    plain = None

    def ratio(res: dict) -> None:
        if plain and "tokens_per_s" in res:
            res["vs_plain_generate"] = res["tokens_per_s"] / plain["tokens_per_s"]

    for name in names:
        need = {"static_cache_compile": 150.0, "continuous_batching": 60.0}.get(name, 30.0)
        if time_left() < need and not cfg_smoke(cfg):
            variants[name] = {"skipped": f"time budget: {time_left():.0f} s left, about {need:.0f} s needed"}
            save()
            continue
        try:
            if name == "plain_generate":
                res = _timed_generate(agent, batch, seed=1)
                plain = res
            elif name == "eager_attention":
                with AttentionImplementation(agent, "eager"):
                    res = _timed_generate(agent, batch, seed=1)
            elif name == "flash_attention_2":
                if importlib.util.find_spec("flash_attn") is None:
                    res = {"skipped": "flash_attn is not installed"}
                else:
                    with AttentionImplementation(agent, "flash_attention_2"):
                        res = _timed_generate(agent, batch, seed=1)
            elif name == "static_cache_compile":
                with GenerationOverrides(agent, cache_implementation="static", compile_config=_compile_config(device)):
                    first = _timed_generate(agent, batch, seed=1)  # traces and compiles
                    res = _timed_generate(agent, batch, seed=2)
                res["first_call_s"] = first["seconds"]
            elif name == "continuous_batching":
                res = _continuous_batching(agent, batch, cfg)
            else:
                raise ValueError(f"unknown generation variant {name!r}; choose from {', '.join(VARIANTS)}")
        except Exception as exc:  # one variant failing must not cost the others
            res = _error(exc)
        ratio(res)
        variants[name] = res
        save()


def cfg_smoke(cfg) -> bool:
    return getattr(cfg, "_scale_smoke", False)


# -- the run -----------------------------------------------------------------------------------------------
def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


def result_path(out: Path, device: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", device_name(device).lower()).strip("_")
    return out / f"scale_{slug}.json"


def train_config(args):
    from vlmrl_fast.config import load_config

    overrides = dict(num_envs=args.num_envs, num_steps=args.num_steps, max_new_tokens=args.max_new_tokens,
                     minibatch_size=args.minibatch_size, grad_accum_steps=args.grad_accum_steps,
                     update_epochs=args.update_epochs, device=args.device, dtype="bfloat16", progress=False,
                     model="random-weights", warm_start="none")
    cfg = load_config(ROOT / "configs" / "points24.toml", overrides)
    cfg.validate()
    return cfg


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for scale_<device>.json")
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (seconds)")
    p.add_argument("--models", default=",".join(reversed(MODELS)), help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--num-steps", type=int, default=2, help="rollout steps per env in the PPO iteration")
    p.add_argument("--max-new-tokens", type=int, default=256, help="forced answer length (min = max)")
    p.add_argument("--serial-envs", type=int, default=4, help="envs rolled out one answer at a time")
    p.add_argument("--serial-steps", type=int, default=1, help="steps of each of those envs")
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--minibatch-size", type=int, default=4)
    p.add_argument("--grad-accum-steps", type=int, default=8)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--budget-s", type=float, default=450.0, help="skip optional stages that would end later")
    args = p.parse_args(argv)
    if args.smoke:
        args.device = args.device or "cpu"
        args.num_envs, args.num_steps, args.max_new_tokens = 2, 1, 6
        args.serial_envs, args.serial_steps, args.minibatch_size, args.grad_accum_steps, args.update_epochs = 1, 1, 1, 2, 1
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for name in args.models.split(","):
        if name not in MODELS:
            p.error(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}")
    for name in args.variants.split(","):
        if name and name not in VARIANTS:
            p.error(f"--variants: unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA GPU is visible")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import transformers

    import vlmrl_fast

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = result_path(out, args.device)
    cfg = train_config(args)
    object.__setattr__(cfg, "_scale_smoke", args.smoke)
    result: dict[str, Any] = {
        "device": device_name(args.device), "smoke": args.smoke,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "vlmrl_fast": getattr(vlmrl_fast, "__version__", "?"), "python": platform.python_version()},
        "settings": {"env": cfg.env, "num_envs": cfg.num_envs, "num_steps": cfg.num_steps,
                     "max_new_tokens": cfg.max_new_tokens, "forced_length": True, "cot": cfg.cot,
                     "temperature": cfg.temperature, "update_epochs": cfg.update_epochs,
                     "minibatch_size": cfg.minibatch_size, "grad_accum_steps": cfg.grad_accum_steps,
                     "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
                     "gradient_checkpointing": cfg.gradient_checkpointing, "dtype": cfg.dtype,
                     "serial_envs": args.serial_envs,
                     "serial_steps": args.serial_steps, "weights": "random (published architectures)"},
        "rows": [], "errors": [], "complete": False,
    }

    def save() -> None:
        result["elapsed_s"] = time.perf_counter() - t_start
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=float))
        os.replace(tmp, path)

    def time_left() -> float:
        return args.budget_s - (time.perf_counter() - t_start)

    save()

    def with_model(name: str, row: dict, stage: Callable[[Any], None]) -> None:
        """Build `name`, run `stage` on its agent, free it; an exception becomes the row's error."""
        spec = toy(MODELS[name]) if args.smoke else MODELS[name]
        agent = None
        try:
            t0 = time.perf_counter()
            agent = build_agent(spec, cfg, args.device)
            _sync()
            row.setdefault("build_s", time.perf_counter() - t0)
            row["parameters_b"] = sum(p.numel() for p in agent.base_model.parameters()) / 1e9
            row["trainable_parameters_m"] = sum(p.numel() for p in agent.parameters() if p.requires_grad) / 1e6
            if torch.cuda.is_available():
                row["memory_after_build_gb"] = torch.cuda.memory_allocated() / 2**30
            warm = _variant_batch(agent, cfg).select([0])  # CUDA/cuBLAS start-up outside the timings
            with GenerationOverrides(agent, max_new_tokens=2):
                agent.generate(warm, seed=0)
            row["prompt_tokens_one_env"] = int(warm.input_ids.shape[1])
            save()
            stage(agent)
        except Exception as exc:
            row["errors"].append(_error(exc))
            print(f"scale.py: {name}: {row['errors'][-1]['error']}", file=sys.stderr)
            print(row["errors"][-1]["traceback_tail"], file=sys.stderr)
        finally:
            del agent
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        save()

    # 1. what the targets need first, model by model: the PPO iteration and the one-at-a-time rollout
    names = args.models.split(",")
    for name in names:
        row: dict[str, Any] = {"model": name, "hub_config": MODELS[name]["hub_id"], "num_envs": cfg.num_envs,
                               "num_steps": cfg.num_steps, "seconds": None, "tokens_per_s": None,
                               "peak_memory_gb": None, "batched_vs_one_at_a_time": None,
                               "generation_variants": {}, "errors": []}
        result["rows"].append(row)

        def iteration(agent, row=row) -> None:
            ppo_iteration(agent, cfg, args.device, row)
            save()
            if time_left() < 60 and not args.smoke:
                row["one_at_a_time"] = {"skipped": f"time budget: {time_left():.0f} s left"}
                return
            serial = dataclasses.replace(cfg, num_steps=args.serial_steps)
            row["one_at_a_time"] = one_at_a_time(agent, serial, args.serial_envs)
            row["batched_vs_one_at_a_time"] = row["env_steps_per_s"] / row["one_at_a_time"]["env_steps_per_s"]

        with_model(name, row, iteration)
        print(f"{name}: seconds {row.get('seconds')} tokens/s {row.get('tokens_per_s')} "
              f"peak {row.get('peak_memory_gb')} GB batched/one-at-a-time {row.get('batched_vs_one_at_a_time')}",
              flush=True)
    # 2. the generation variants, as far as the budget goes
    variants = [v for v in args.variants.split(",") if v]
    for name, row in zip(names, result["rows"]):
        if not variants:
            break
        if time_left() < 45 and not args.smoke:
            row["generation_variants"] = {"skipped": f"time budget: {time_left():.0f} s left"}
            save()
            continue
        with_model(name, row, lambda agent, row=row: generation_variants(agent, cfg, args.device, variants, row,
                                                                         save, time_left))
        print(f"{name}: generation variants {json.dumps({k: v.get('vs_plain_generate', v.get('skipped', v.get('error'))) for k, v in row['generation_variants'].items() if isinstance(v, dict)}, default=float)}",
              flush=True)
    result["complete"] = True
    save()
    print(f"wrote {path}")
    return 1 if any(r["errors"] for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
