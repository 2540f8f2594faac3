"""Typed configuration of `vlmrl train` / `vlmrl sft`, loaded from TOML files and command-line overrides.

One dataclass, :class:`TrainConfig`, holds every setting. Each field carries a one-line help text and,
where it has one, its allowed range or choices in the field metadata; the command-line parser is generated
from it (:func:`add_config_arguments`) and :meth:`TrainConfig.validate` checks every field once, at start,
with a message that names the field, the allowed values and the file it came from.

Config files are flat TOML (``key = value`` with the field names below). Tables such as ``[ppo]`` are
allowed for grouping; their keys are the same field names (the table name is only a heading).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


PREPROCESS_MODES = ("auto", "native", "hf")
IMAGE_BACKENDS = ("pil", "torchvision", "auto")
"""Image preprocessing of `Agent.prompt_batch`: "auto" uses the native Rust pipeline
(`vlmrl_fast.preprocess.ImagePipeline`) when the processor has one, "native" requires it, "hf"
always calls the Hugging Face processor."""


class ConfigError(ValueError):
    """A config file or command-line value is missing, of the wrong type or out of range."""


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its help text and validation metadata (min, max, choices, flag)."""
    meta["help"] = help
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every setting of a run. Defaults are the main job (`vlmrl train` with no arguments): NumberLine-v0 with
    the embedded tiny VLM on the CPU, fully fine-tuned (no LoRA) with a larger learning rate and looser
    clipping than the paper's 7B settings, which configs/*.toml ship for each game."""

    # -- run ---------------------------------------------------------------------------------------------
    env: str = _f("NumberLine-v0", "environment id (see `vlmrl envs`), or MODULE:ENV_ID: a gymnasium env that "
                  "importing MODULE registers", group="run")
    prompt_template: str = _f("", "prompt template TOML file of a MODULE:ENV_ID env (the schema of "
                              "envs/prompts/*.toml)", group="run")
    env_vectorization: str = _f("sync", "gymnasium vector env of a MODULE:ENV_ID env: sync (one process) or "
                                "async (one process per env)", group="run", choices=("sync", "async"))
    model: str = _f("tiny", "model directory, hub id, or 'tiny' for the embedded tiny VLM", group="run")
    seed: int = _f(0, "seed of everything (envs, sampling, init); each process adds its rank", group="run", min=0)
    run_dir: str = _f("", "output folder; empty means runs/<run_name>", group="run")
    run_name: str = _f("", "name of the run folder under runs/; empty means <env>-<model>-seed<seed>", group="run")
    updates: int = _f(80, "number of PPO updates (rollout + optimisation) after the warm start", group="run", min=0)
    stop_after: int = _f(0, "stop this invocation after so many updates (0: never); continue with --resume",
                         group="run", min=0)
    checkpoint_every: int = _f(5, "write a checkpoint every so many updates (and always at the end)",
                               group="run", min=1)
    device: str = _f("cpu", "device: cpu, cuda, cuda:N or auto (cuda when available)", group="run")
    dtype: str = _f("float32", "weights dtype", group="run", choices=("float32", "bfloat16", "float16"))
    torch_threads: int = _f(1, "torch's threads on the CPU device: 1 makes a run's numbers independent of the "
                            "machine's core count (a sum is not split by it); 0 keeps torch's default, one per core",
                            group="run", min=0)
    tensorboard: bool = _f(False, "also log metrics to TensorBoard (needs tensorboard installed)", group="run")
    wandb: bool = _f(False, "also log metrics to Weights & Biases (needs wandb installed)", group="run")
    progress: bool = _f(True, "show progress bars", group="run")

    # -- rollout -----------------------------------------------------------------------------------------
    num_envs: int = _f(16, "environments stepped together by each process", group="rollout", min=1)
    num_steps: int = _f(12, "rollout length: steps per environment per update", group="rollout", min=1)
    temperature: float = _f(0.2, "sampling temperature (log-probs are computed at logits / temperature)",
                            group="rollout", min=1e-4, max=10.0)
    max_new_tokens: int = _f(32, "longest answer the model may generate", group="rollout", min=1)
    cot: bool = _f(True, "prompt for chain-of-thought answers (False: action-only prompts)", group="rollout")
    state_text: bool = _f(False, "append the env's text description of the image (info['text']) to the prompt",
                          group="rollout")
    thought_coef: float = _f(0.5, "lambda: weight of chain-of-thought token log-probs in the action log-prob",
                             group="rollout", min=0.0, max=1.0)
    invalid_fallback: str = _f("random", "action taken for an answer that does not parse to one action",
                               group="rollout", choices=("random", "fixed"))
    fallback_action: int = _f(0, "action index used when invalid_fallback = 'fixed'", group="rollout", min=0)
    invalid_penalty: float = _f(1.0, "subtracted from the reward of a step whose answer was invalid",
                                group="rollout", min=0.0)
    group_size: int = _f(1, "envs per group: each group of this many envs starts every rollout from one "
                         "state (the group methods compare their episodes); num_envs must be a multiple",
                         group="rollout", min=1)
    history_steps: int = _f(0, "the prompt carries the last k steps of the episode (action taken and the env's "
                            "text feedback; past images are not re-sent)", group="rollout", min=0)

    # -- ppo ---------------------------------------------------------------------------------------------
    algorithm: str = _f("ppo", "advantages: ppo (GAE with a value head), grpo, rloo or gigpo (value-free, "
                        "from group_size groups; see vlmrl_fast.advantages)", group="ppo",
                        choices=("ppo", "grpo", "rloo", "gigpo"))
    gigpo_step_coef: float = _f(1.0, "GiGPO: weight of the step-level (same-state) advantage", group="ppo",
                                min=0.0)
    learning_rate: float = _f(3e-5, "peak learning rate (cosine schedule over the updates)", group="ppo",
                              min=0.0, max=1.0)
    min_learning_rate: float = _f(1e-5, "learning rate at the end of the cosine schedule", group="ppo",
                                  min=0.0, max=1.0)
    gamma: float = _f(0.9, "discount factor", group="ppo", min=0.0, max=1.0)
    gae_lambda: float = _f(0.95, "GAE lambda", group="ppo", min=0.0, max=1.0)
    update_epochs: int = _f(4, "PPO epochs over each rollout", group="ppo", min=1)
    minibatch_size: int = _f(16, "samples per forward/backward pass", group="ppo", min=1)
    grad_accum_steps: int = _f(1, "minibatches accumulated per optimizer step", group="ppo", min=1)
    clip_coef: float = _f(0.2, "PPO ratio clip range", group="ppo", min=0.0, max=1.0)
    clip_vloss: bool = _f(True, "clip the value loss around the old values", group="ppo")
    vf_coef: float = _f(0.5, "value loss coefficient", group="ppo", min=0.0)
    ent_coef: float = _f(0.0, "entropy bonus coefficient", group="ppo", min=0.0)
    kl_coef: float = _f(0.01, "KL penalty to the initial policy (0: off, no reference model kept; the main job's "
                        "0.01 keeps its thoughts reading the image during RL without holding its actions to the "
                        "warm start's random ones)", group="ppo",
                        min=0.0)
    kl_estimator: str = _f("k3_token", "estimator of that KL on the sampled answers: k1 (log-ratio), k2 "
                           "(half the squared log-ratio: the reverse KL's gradient), k3 (low-variance, "
                           "non-negative) on the whole answer's log-prob, or k2_token / k3_token (per token, "
                           "summed over the answer; k3_token is exponential in a token's log-ratio, k2_token "
                           "quadratic)", group="ppo", choices=("k1", "k2", "k3", "k2_token", "k3_token"))
    target_kl: float = _f(0.3, "stop the update's epochs early once an epoch's mean approx KL exceeds this (0: off)",
                          group="ppo", min=0.0)
    max_grad_norm: float = _f(1.0, "gradient clipping norm", group="ppo", min=0.0)
    norm_adv: bool = _f(True, "normalise advantages over each rollout", group="ppo")
    ratio_guard: float = _f(10.0, "if any ratio of a minibatch exceeds this, use only the clipped term (paper)",
                            group="ppo", min=1.0)
    weight_decay: float = _f(0.0, "Adam(W) weight decay", group="ppo", min=0.0)
    adam_eps: float = _f(1e-7, "Adam epsilon", group="ppo", min=0.0)

    # -- model -------------------------------------------------------------------------------------------
    lora: bool = _f(False, "train LoRA adapters instead of all weights", group="model")
    lora_r: int = _f(128, "LoRA rank", group="model", min=1)
    lora_alpha: int = _f(256, "LoRA alpha", group="model", min=1)
    lora_dropout: float = _f(0.05, "LoRA dropout", group="model", min=0.0, max=1.0)
    lora_target_modules: str = _f("all-linear", "LoRA target modules: all-linear or a comma-separated list",
                                  group="model")
    lora_vision: bool = _f(False, "also put LoRA adapters on the vision tower", group="model")
    preprocess: str = _f("auto", "image preprocessing: 'auto' (native Rust pipeline when the processor has one), "
                         "'native' (required) or 'hf' (the Hugging Face processor)", group="model",
                         choices=PREPROCESS_MODES)
    image_backend: str = _f("pil", "backend of the Hugging Face image processor: 'pil' (the same pixels whether or not "
                            "torchvision is installed), 'torchvision' or 'auto' (transformers' choice)", group="model",
                            choices=IMAGE_BACKENDS)
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory", group="model")
    quantization: str = _f("none", "load the base model quantised (GPU only, bitsandbytes)", group="model",
                           choices=("none", "4bit", "8bit"))

    # -- warm start (SFT) --------------------------------------------------------------------------------
    warm_start: str = _f("sft", "before RL: 'sft' fine-tunes on demonstrations, 'none' starts from the model",
                         group="sft", choices=("sft", "none"))
    sft_episodes: int = _f(60, "demonstration episodes collected from the environment", group="sft", min=1)
    sft_actions: str = _f("random", "actions in the demonstrations: the expert's or uniformly random ones "
                          "(random: teaches format and perception, leaves the decision to RL)", group="sft",
                          choices=("expert", "random"))
    sft_thoughts: str = _f("state", "thoughts of the demonstrations: the template's, 'state' (what the image "
                           "shows, with NumberLine's comparison, never why the action was taken) or 'plan' (the "
                           "expert's whole solution, then its next step: EZPoints, Points24) or 'sorted_plan' (the "
                           "same, after the card values in ascending order: one text per set of values) or "
                           "'pattern_plan' (as 'sorted_plan', the solution and the expert's moves from a few "
                           "patterns shared by all deals: vlmrl_fast.patterns)", group="sft",
                           choices=("template", "state", "plan", "sorted_plan", "pattern_plan"))
    sft_epochs: int = _f(4, "passes over the demonstrations", group="sft", min=1)
    sft_batch_size: int = _f(16, "demonstrations per optimizer step", group="sft", min=1)
    sft_learning_rate: float = _f(3e-4, "SFT learning rate (cosine to zero)", group="sft", min=0.0, max=1.0)
    sft_plan_weight: float = _f(1.0, "loss weight of the solution's tokens in plan thoughts (sft_thoughts plan / "
                                "sorted_plan / pattern_plan) against 1 for the other answer tokens: the solution "
                                "is the one hard part of a formula game's answer, about one token in eight",
                                group="sft", min=0.0)
    perception_steps: int = _f(0, "steps of the perception stage before SFT (vlmrl_fast.perception: truthful "
                               "answers on frames of the env plus auxiliary classifiers of the state fields on "
                               "the image features; teaches a model to read the env's image); 0: off (the "
                               "embedded tiny VLM reads the four gym_cards games and ALFWorld-v0 from its build "
                               "on)", group="sft", min=0)
    perception_frames: int = _f(2048, "frames the perception stage trains on", group="sft", min=1)
    perception_play: str = _f("random", "how the envs play while the perception stage's frames are recorded: "
                              "random actions (2 steps per env), or the expert's (16 steps per env: deeper "
                              "states, e.g. ALFWorld's held objects; the answers still name random actions)",
                              group="sft", choices=("random", "expert"))
    perception_vision_steps: int = _f(150, "first steps of the perception stage that train only the vision tower, "
                                      "projector and the auxiliary field classifiers (4x larger batches)",
                                      group="sft", min=0)
    perception_learning_rate: float = _f(3e-4, "perception stage learning rate (warm-up, cosine to zero)",
                                         group="sft", min=0.0, max=1.0)
    perception_field_weight: float = _f(5.0, "perception stage: loss weight of the answer tokens that state the "
                                        "state (the numbers, the cards) against 1 for the others", group="sft",
                                        min=0.0)
    perception_probe: str = _f("auto", "perception stage: auxiliary classifiers on the image features: linear "
                               "per slot, attentive (per-slot query, one classifier per field), both, or auto "
                               "(attentive for fields of several cards)", group="sft",
                               choices=("linear", "attentive", "both", "auto"))

    # -- evaluation --------------------------------------------------------------------------------------
    eval_episodes: int = _f(200, "episodes of the fixed evaluation set (before and after RL)", group="eval",
                            min=0)
    eval_seed: int = _f(1_000_003, "seed of the fixed evaluation set", group="eval", min=0)
    eval_batch: int = _f(100, "evaluation episodes played at once", group="eval", min=1)
    eval_every: int = _f(10, "evaluate on a fixed held-out set every so many updates during RL (0: off); logged "
                         "as eval/success_rate, drawn on the learning curve", group="eval", min=0)
    eval_every_episodes: int = _f(50, "episodes of that periodic evaluation (a fixed set seeded by "
                                  "eval_seed, like the evaluations before and after RL)", group="eval", min=1)
    report_episodes: int = _f(4, "evaluation episodes shown in report.html", group="eval", min=0)

    # -- several processes (accelerate launch / torchrun) ------------------------------------------------
    dist_timeout: float = _f(1800.0, "time-out of every collective between processes, in seconds (rollouts "
                             "and evaluations of unequal duration wait outside collectives)", group="distributed",
                             min=1.0)

    # ----------------------------------------------------------------------------------------------------
    def validate(self, source: str = "") -> "TrainConfig":
        """Check every field's type and range; raise ConfigError naming the field. Returns self."""
        where = f" (from {source})" if source else ""
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            value = _coerce(f.name, value, hints[f.name], where)
            setattr(self, f.name, value)
            meta = f.metadata
            if "choices" in meta and value not in meta["choices"]:
                raise ConfigError(f"config field '{f.name}': {value!r} is not one of "
                                  f"{', '.join(map(str, meta['choices']))}{where}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"config field '{f.name}': must be finite, got {value!r}{where}")
            if "min" in meta and value < meta["min"]:
                raise ConfigError(f"config field '{f.name}': must be >= {meta['min']}, got {value!r}{where}")
            if "max" in meta and value > meta["max"]:
                raise ConfigError(f"config field '{f.name}': must be <= {meta['max']}, got {value!r}{where}")
        if self.min_learning_rate > self.learning_rate:
            raise ConfigError(f"config field 'min_learning_rate': {self.min_learning_rate} is above "
                              f"learning_rate {self.learning_rate}{where}")
        batch = self.num_envs * self.num_steps
        per_step = self.minibatch_size * self.grad_accum_steps
        if batch % per_step:
            raise ConfigError(f"config field 'grad_accum_steps': num_envs * num_steps = {batch} samples must be "
                              f"a multiple of minibatch_size * grad_accum_steps = {per_step}{where}")
        if self.num_envs % self.group_size:
            raise ConfigError(f"config field 'group_size': num_envs = {self.num_envs} must be a multiple of "
                              f"group_size = {self.group_size}{where}")
        if self.algorithm != "ppo" and self.group_size < 2:
            raise ConfigError(f"config field 'group_size': algorithm {self.algorithm} compares episodes within "
                              f"groups, so group_size must be >= 2, got {self.group_size}{where}")
        if self.group_size > 1 and ":" in self.env:  # MODULE:ENV_ID: a gymnasium env of the user's
            raise ConfigError(f"config field 'group_size': group resets need the engine's games; env {self.env} "
                              f"is a Python env (group_size must be 1){where}")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise ConfigError(f"config field 'device': {self.device!r} is not cpu, cuda, cuda:N or auto{where}")
        if self.quantization != "none" and self.device == "cpu":
            raise ConfigError(f"config field 'quantization': {self.quantization} needs a CUDA device{where}")
        return self

    @property
    def batch_size(self) -> int:
        """Samples per update and process: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    def resolved_run_dir(self) -> Path:
        """The run folder: run_dir if set, else runs/<run_name or a name made of env, model and seed>."""
        if self.run_dir:
            return Path(self.run_dir)
        name = self.run_name or f"{self.env.replace(':', '_')}-{Path(self.model).name.replace(':', '_')}-seed{self.seed}"
        return Path("runs") / name

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (what the run saves as its resolved config)."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as a TOML document, grouped by section, that `load_config` reads back unchanged."""
        lines = ["# resolved config of this run (vlmrl_fast.config.TrainConfig)"]
        group = None
        for f in dataclasses.fields(self):
            if f.metadata.get("group") != group:
                group = f.metadata.get("group")
                lines.append(f"\n[{group}]")
            lines.append(f"{f.name} = {_toml_value(getattr(self, f.name))}  # {f.metadata['help']}")
        return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def _coerce(name: str, value: Any, typ: Any, where: str) -> Any:
    """Return value as typ (int/float/str/bool), or raise ConfigError naming the field."""
    ok: bool
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif typ is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field is one of the four
        ok = True
    if not ok:
        raise ConfigError(f"config field '{name}': expected {typ.__name__}, got {type(value).__name__} "
                          f"{value!r}{where}")
    return value


def field_names() -> list[str]:
    """Names of every config field."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML config file into {field: value}; unknown keys and syntax errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: not valid TOML: {e}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            flat[k] = v
    known = set(field_names())
    for k in flat:
        if k not in known:
            raise ConfigError(f"config file {path}: unknown field '{k}'")
    return flat


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the file's values, then overrides; validated. Errors name the field and the file."""
    values: dict[str, Any] = {}
    source = ""
    if path is not None:
        values.update(read_config_file(path))
        source = str(path)
    known = set(field_names())
    for k, v in (overrides or {}).items():
        if k not in known:
            raise ConfigError(f"unknown config field '{k}'")
        values[k] = v
    cfg = TrainConfig(**values)
    return cfg.validate(source)


# -- command line ----------------------------------------------------------------------------------------
_ALIASES = {"env": ["--env", "--env-id"], "run_dir": ["--run-dir"], "num_envs": ["--num-envs"]}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per config field (`--field-name`, help from the field); defaults stay unset (None)
    so that only options given on the command line override the config file."""
    hints = get_type_hints(TrainConfig)
    for group_name in dict.fromkeys(f.metadata["group"] for f in dataclasses.fields(TrainConfig)):
        group = parser.add_argument_group(f"{group_name} options")
        for f in dataclasses.fields(TrainConfig):
            if f.metadata["group"] != group_name:
                continue
            flags = _ALIASES.get(f.name, ["--" + f.name.replace("_", "-")])
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
            help_text = f"{f.metadata['help']} (default: {default})"
            typ = hints[f.name]
            if typ is bool:
                group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                   help=help_text)
            else:
                kwargs: dict[str, Any] = {"type": typ}
                if "choices" in f.metadata:
                    kwargs["choices"] = f.metadata["choices"]
                group.add_argument(*flags, dest=f.name, default=None, metavar=typ.__name__.upper(),
                                   help=help_text, **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (those not None)."""
    return {k: getattr(args, k) for k in field_names() if getattr(args, k, None) is not None}
