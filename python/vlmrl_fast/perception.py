"""Perception: does the model read the environment's image? Frames with their truth, a training stage, a metric.

* `truth_fields(env_id, info)`: the state fields of the env's answer format, true to the state
  (NumberLine "current number"/"target number", the "cards" of EZPoints/Points24, Blackjack's cards and the
  dealer's card as its default thoughts name them). ALFWorld's format has no state field: None.
* `answer_fields(env_id, text)`: the same fields read from a model's answer (None: unparsable).
* `perception_accuracy(env_id, answers, infos)`: the share of answers whose state fields all equal the truth
  (an unparsable answer or a missing field counts as wrong); NaN for an env without state fields.
  `thought_consistency`: NumberLine's stated comparison ("smaller than", ...) against the true state.
* `perception_frames`: frames the engine renders with their info, from random play (`make_vec`).
* `train_perception`: the stage. The loss is the answer tokens' NLL (answers whose state fields are true
  and whose action is random, so no decision is taught) plus auxiliary classifiers of every state field on
  the projector's image features, with a higher learning rate for the vision tower and projector. The
  auxiliary heads force the image tokens to carry the digits/cards linearly; the answer loss then makes the
  language model read them (without the heads, SFT of the whole model learns a constant caption).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from vlmrl_fast import prompts

NO_CARD = "<none>"  # padding of a card slot beyond a hand's length (auxiliary labels)
_BLACKJACK_RE = re.compile(r"My cards are (.+?), a total of .+?, and the dealer shows (.+?)\.")
_RELATION_RE = re.compile(r"current number (-?\d+) is (smaller than|larger than|equal to) the target number (-?\d+)")


# The state fields of each answer format (Blackjack's live in its thoughts, ALFWorld's format has none).
FIELDS = {"NumberLine-v0": ("current number", "target number"), "EZPoints-v0": ("cards",),
          "Points24-v0": ("cards",), "Blackjack-v0": ("player cards", "dealer card"), "ALFWorld-v0": ()}


def _key(env_id: str) -> str:
    return env_id.rsplit("/", 1)[-1]


def has_fields(env_id: str) -> bool:
    """Whether `env_id`'s answer format states fields of the state (a perception accuracy is defined)."""
    return bool(FIELDS.get(_key(env_id)))


def truth_fields(env_id: str, info: dict[str, Any]) -> dict[str, Any] | None:
    """The state fields of `env_id`'s answer format, filled from `info`; None when the format has none."""
    key = _key(env_id)
    if key == "NumberLine-v0":
        return {"current number": int(info["Current"]), "target number": int(info["Target"])}
    if key in ("EZPoints-v0", "Points24-v0"):
        return {"cards": prompts._cards(info["Cards"])}
    if key == "Blackjack-v0":
        dealer = prompts._cards(info["Dealer Card"])
        return {"player cards": prompts._cards(info["Player Card"]), "dealer card": dealer[0] if dealer else "nothing"}
    if key == "ALFWorld-v0":
        return None
    raise prompts.PromptError(f"no perception fields for env {env_id!r}; known: {', '.join(prompts.ENV_IDS)}")


def _json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def answer_fields(env_id: str, text: str) -> dict[str, Any] | None:
    """The state fields an answer states (missing ones absent); None when the answer is not a JSON object."""
    obj = _json_object(text)
    if obj is None:
        return None
    key = _key(env_id)
    if key == "Blackjack-v0":
        m = _BLACKJACK_RE.search(str(obj.get("thoughts", "")))
        if m is None:
            return {}
        return {"player cards": [c.strip() for c in m.group(1).split(",")], "dealer card": m.group(2).strip()}
    return {k: obj[k] for k in FIELDS.get(key, ()) if k in obj}


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, list):
        return isinstance(a, list) and [str(x) for x in a] == [str(x) for x in b]
    if isinstance(b, int) and not isinstance(a, bool):
        try:
            return int(a) == b and float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return str(a) == str(b)


def perception_correct(env_id: str, answers: Sequence[str], infos: Sequence[dict[str, Any]]) -> np.ndarray:
    """Per answer: 1.0 when every state field equals the truth, 0.0 otherwise, NaN for an env without fields."""
    if len(answers) != len(infos):
        raise ValueError(f"perception_correct: {len(answers)} answers but {len(infos)} infos")
    out = np.full(len(answers), np.nan)
    for i, (text, info) in enumerate(zip(answers, infos)):
        truth = truth_fields(env_id, info)
        if truth is None:
            continue
        got = answer_fields(env_id, text) or {}
        out[i] = float(all(k in got and _same(got[k], v) for k, v in truth.items()))
    return out


def perception_accuracy(env_id: str, answers: Sequence[str], infos: Sequence[dict[str, Any]]) -> float:
    """Share of answers whose state fields all equal the truth (NaN: no answers, or no fields in the format)."""
    c = perception_correct(env_id, answers, infos)
    c = c[~np.isnan(c)]
    return float(c.mean()) if len(c) else float("nan")


def thought_consistency(env_id: str, answers: Sequence[str], infos: Sequence[dict[str, Any]]) -> float:
    """NumberLine: share of answers whose thoughts state the true comparison of the current and the target
    number (an answer without that sentence counts as inconsistent). NaN for the other envs."""
    if _key(env_id) != "NumberLine-v0" or not answers:
        return float("nan")
    ok = 0
    for text, info in zip(answers, infos):
        obj = _json_object(text) or {}
        m = _RELATION_RE.search(str(obj.get("thoughts", "")))
        cur, tgt = int(info["Current"]), int(info["Target"])
        rel = "smaller than" if cur < tgt else ("larger than" if cur > tgt else "equal to")
        ok += int(m is not None and int(m.group(1)) == cur and int(m.group(3)) == tgt and m.group(2) == rel)
    return ok / len(answers)


# -- frames with their truth ------------------------------------------------------------------------------
@dataclass
class PerceptionSet:
    """Frames [M, H, W, 3] uint8 with the prompt, a truthful answer (random action) and the info of each."""

    env_id: str
    frames: np.ndarray
    prompts: list[str]
    answers: list[str]
    infos: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.prompts)


def perception_frames(env_id: str, count: int, *, seed: int = 0, num_envs: int = 16, cot: bool = True,
                      **env_kwargs: Any) -> PerceptionSet:
    """`count` frames from random play of `env_id` (seeded), each with its info and a truthful answer whose
    action is uniformly random and whose thoughts state the state (`sft.state_thoughts`)."""
    from vlmrl_fast.sft import record_play

    if count < 1:
        raise ValueError(f"perception_frames: count must be >= 1, got {count}")
    n = max(1, min(num_envs, count))
    steps = []
    play = record_play(env_id, n, seed=seed, salt=0x9E4C, actions="random", cot=cot, state_text=False,
                       thoughts="state", **env_kwargs)
    try:
        while len(steps) < count:
            steps.extend(next(play)[0])
    finally:
        play.close()
    steps = steps[:count]
    return PerceptionSet(env_id, np.stack([s.frame for s in steps]), [s.prompt for s in steps],
                         [s.answer for s in steps], [s.info for s in steps])


# -- auxiliary labels -------------------------------------------------------------------------------------
def _slots(env_id: str, info: dict[str, Any], width: dict[str, int]) -> dict[str, str]:
    """One categorical label per field slot: a scalar field is one slot, a card list one slot per position."""
    out: dict[str, str] = {}
    for k, v in (truth_fields(env_id, info) or {}).items():
        if isinstance(v, list):
            for j in range(width[k]):
                out[f"{k}[{j}]"] = str(v[j]) if j < len(v) else NO_CARD
        else:
            out[k] = str(v)
    return out


class AuxHeads(nn.Module):
    """A linear classifier per field slot on the flattened image features of one image."""

    def __init__(self, in_features: int, classes: dict[str, list[str]]):
        super().__init__()
        self.names = sorted(classes)
        self.classes = {k: list(classes[k]) for k in self.names}
        self.heads = nn.ModuleList(nn.Linear(in_features, len(self.classes[k])) for k in self.names)

    def forward(self, feats: torch.Tensor) -> list[torch.Tensor]:
        return [h(feats) for h in self.heads]


def _capture(store: list[torch.Tensor]) -> Callable[..., None]:
    """A forward hook appending the module's output (its first element when a tuple) to `store`."""
    def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
        store.append(out[0] if isinstance(out, tuple) else out)
    return hook


def _feature_module(model: Any) -> nn.Module:
    """The module whose output is the image features the language model sees (projector / merger)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", base)
    for owner in (inner, base):
        for name in ("multi_modal_projector", "visual"):
            mod = getattr(owner, name, None)
            if isinstance(mod, nn.Module):
                return mod
    raise ValueError(f"perception: {type(base).__name__} has no multi_modal_projector or visual module to "
                     f"attach the auxiliary heads to")


def _vision_params(model: Any) -> set[int]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids: set[int] = set()
    for name, p in base.named_parameters():
        if any(s in name for s in ("vision_tower", "multi_modal_projector", "visual")):
            ids.add(id(p))
    return ids


def greedy_answers(agent: Any, frames: np.ndarray, prompt_texts: list[str], *, batch: int = 64,
                   seed: int = 0) -> list[str]:
    """The agent's greedy answers to (frame, prompt) pairs."""
    temperature = agent.temperature
    agent.temperature = 0.0
    out: list[str] = []
    try:
        for s in range(0, len(prompt_texts), batch):
            b = agent.prompt_batch(frames[s:s + batch], prompt_texts[s:s + batch]).to(agent.device)
            out.extend(agent.generate(b, seed=seed).texts)
    finally:
        agent.temperature = temperature
    return out


def held_out_accuracy(agent: Any, data: PerceptionSet, *, batch: int = 64) -> float:
    """Perception accuracy of the agent's greedy answers on `data`."""
    was = agent.training
    agent.eval()
    try:
        return perception_accuracy(data.env_id, greedy_answers(agent, data.frames, data.prompts, batch=batch),
                                   data.infos)
    finally:
        agent.train(was)


@dataclass
class StageResult:
    """What the perception stage did: the loss of every joint step, the auxiliary loss of every step (vision
    phase first) and the auxiliary heads per env (not part of the model; `probe_accuracy` reads them)."""

    losses: list[float]
    aux_losses: list[float]
    heads: dict[str, AuxHeads]
    labels_width: dict[str, dict[str, int]]


def probe_accuracy(agent: Any, stage: StageResult, data: PerceptionSet, *, batch: int = 64) -> float:
    """Share of frames of `data` whose every field slot the stage's auxiliary heads classify right from the
    model's image features: whether the image tokens carry the state (independent of the language model)."""
    heads = stage.heads[data.env_id]
    feat_mod = _feature_module(agent.model)
    captured: list[torch.Tensor] = []
    hook = feat_mod.register_forward_hook(_capture(captured))
    right = 0
    try:
        with torch.no_grad():
            for s in range(0, len(data), batch):
                frames = data.frames[s:s + batch]
                b = agent.prompt_batch(frames, [data.prompts[0]] * len(frames)).to(agent.device)
                captured.clear()
                _image_features(agent, b.vision)
                rows = [_slots(data.env_id, info, stage.labels_width[data.env_id]) for info in data.infos[s:s + batch]]
                preds = [lg.argmax(-1).tolist() for lg in heads(captured[-1].reshape(len(frames), -1).float())]
                for j, row in enumerate(rows):
                    right += all(heads.classes[n][preds[k][j]] == row[n] for k, n in enumerate(heads.names))
    finally:
        hook.remove()
    return right / len(data)


def train_perception(agent: Any, data: Sequence[PerceptionSet], *, steps: int, batch_size: int = 32,
                     learning_rate: float = 3e-4, vision_lr_scale: float = 3.0, aux_weight: float = 1.0,
                     vision_steps: int = 0,
                     seed: int = 0, max_grad_norm: float = 1.0, device: torch.device | str | None = None,
                     on_step: Callable[[int, int, float], None] | None = None) -> StageResult:
    """The perception stage: `steps` AdamW steps (warm-up then cosine to 0) on batches drawn from the frame
    sets (round robin over envs), after `vision_steps` steps that train only the vision tower, projector and
    auxiliary heads (batches 4x larger: the vision side alone is cheap) - a curriculum: first make the image
    features carry the fields, then teach the language model to read them. Loss: answer-token NLL +
    `aux_weight` x the mean cross-entropy of the auxiliary field classifiers on the image features (the
    joint phase warms up over steps // 20: a fresh Adam's first full step would scramble the features the
    vision phase made). The vision tower and projector learn at
    `vision_lr_scale` x `learning_rate`. The heads are dropped afterwards (the saved model is unchanged in
    architecture). Returns a `StageResult` (losses, auxiliary losses, the heads)."""
    from vlmrl_fast.sft import answer_token_ids, answer_token_loss

    if steps < 0 or vision_steps < 0 or steps + vision_steps < 1:
        raise ValueError(f"train_perception: steps and vision_steps must be >= 0 and not both 0, got {steps} "
                         f"and {vision_steps}")
    if not data:
        raise ValueError("train_perception: no frame sets")
    device = device if device is not None else agent.device
    feat_mod = _feature_module(agent.model)
    captured: list[torch.Tensor] = []
    hook = feat_mod.register_forward_hook(_capture(captured))
    try:
        # sizes of the image features and the label vocabularies, per env
        heads: dict[str, AuxHeads] = {}
        widths: dict[str, dict[str, int]] = {}
        labels: dict[str, list[dict[str, str]]] = {}
        for d in data:
            truths = [truth_fields(d.env_id, info) for info in d.infos]
            if truths[0] is None:
                continue
            width = {k: max(len(t[k]) for t in truths) for k, v in truths[0].items() if isinstance(v, list)}
            widths[d.env_id] = width
            labels[d.env_id] = [_slots(d.env_id, info, width) for info in d.infos]
            classes: dict[str, list[str]] = {}
            for row in labels[d.env_id]:
                for k, v in row.items():
                    if v not in classes.setdefault(k, []):
                        classes[k].append(v)
            captured.clear()
            with torch.no_grad():
                agent.model(**_forward_inputs(agent, d.frames[:1], d.prompts[:1], device))
            heads[d.env_id] = AuxHeads(captured[-1].numel(), classes).to(device)
        vision = _vision_params(agent.model)
        params = [p for p in agent.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) not in vision], "lr": learning_rate, "scale": 1.0},
                  {"params": [p for p in params if id(p) in vision], "lr": learning_rate * vision_lr_scale,
                   "scale": vision_lr_scale},
                  {"params": [p for h in heads.values() for p in h.parameters()], "lr": learning_rate * vision_lr_scale,
                   "scale": vision_lr_scale}]
        groups = [g for g in groups if g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=learning_rate, weight_decay=0.0)
        aux_losses: list[float] = []
        answer_ids = {d.env_id: answer_token_ids(agent, d.answers) for d in data}
        rng = np.random.default_rng([seed, 0xAE5C])
        if vision_steps > 0 and heads:
            _train_vision(agent, data, heads, labels, captured, vision_steps, 4 * batch_size,
                          learning_rate * vision_lr_scale, rng, device, max_grad_norm, aux_losses)
        warmup = max(1, steps // 20)
        losses: list[float] = []
        agent.train()
        for step in range(steps):
            d = data[step % len(data)]
            idx = rng.choice(len(d), size=min(batch_size, len(d)), replace=False)
            progress = (step - warmup) / max(steps - warmup, 1)
            factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * progress))
            for g in optimizer.param_groups:
                g["lr"] = learning_rate * g["scale"] * factor
            captured.clear()
            loss = answer_token_loss(agent, d.frames[idx], [d.prompts[i] for i in idx],
                                     [answer_ids[d.env_id][i] for i in idx], device)
            if d.env_id in heads and captured:
                aux = _aux_loss(heads[d.env_id], captured[-1], [labels[d.env_id][i] for i in idx])
                aux_losses.append(float(aux.detach()))
                loss = loss + aux_weight * aux
            if not torch.isfinite(loss):
                optimizer.zero_grad(set_to_none=True)
                continue
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step + 1, steps, losses[-1])
    finally:
        hook.remove()
        agent.eval()
    return StageResult(losses, aux_losses, heads, widths)


def _aux_loss(heads: AuxHeads, feats: torch.Tensor, rows: list[dict[str, str]]) -> torch.Tensor:
    loss = feats.new_zeros(())
    for name, logits in zip(heads.names, heads(feats.reshape(len(rows), -1).float())):
        target = torch.tensor([heads.classes[name].index(r[name]) for r in rows], device=logits.device)
        loss = loss + nn.functional.cross_entropy(logits, target)
    return loss / len(heads.names)


def _image_features(agent: Any, vision: dict[str, torch.Tensor]) -> None:
    """Run the model's image path only (the projector hook captures its output)."""
    import inspect

    base = agent.base_model
    inner = getattr(base, "model", base)
    fn = inner.get_image_features
    accepted = inspect.signature(fn).parameters
    fn(**{k: v for k, v in vision.items() if k in accepted})


def _train_vision(agent: Any, data: Sequence[PerceptionSet], heads: dict[str, AuxHeads],
                  labels: dict[str, list[dict[str, str]]], captured: list[torch.Tensor], steps: int, batch_size: int,
                  lr: float, rng: np.random.Generator, device: Any, max_grad_norm: float,
                  aux_losses: list[float]) -> None:
    vision = _vision_params(agent.model)
    params = [p for p in agent.parameters() if p.requires_grad and id(p) in vision]
    params += [p for h in heads.values() for p in h.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sets = [d for d in data if d.env_id in heads]
    warmup = max(1, steps // 20)
    agent.train()
    for step in range(steps):
        d = sets[step % len(sets)]
        idx = rng.choice(len(d), size=min(batch_size, len(d)), replace=False)
        for g in optimizer.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup)
        b = agent.prompt_batch(d.frames[idx], [d.prompts[0]] * len(idx)).to(device)
        captured.clear()
        _image_features(agent, b.vision)
        loss = _aux_loss(heads[d.env_id], captured[-1], [labels[d.env_id][i] for i in idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        aux_losses.append(float(loss.detach()))


def _forward_inputs(agent: Any, frames: np.ndarray, prompt_texts: list[str], device: Any) -> dict[str, Any]:
    b = agent.prompt_batch(frames, prompt_texts).to(device)
    return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, **b.vision}
