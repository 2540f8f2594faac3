"""Perception: does the model read the environment's image? Frames with their truth, a training stage, a metric.

* `truth_fields(env_id, info)`: the state fields of the env's answer format, true to the state
  (NumberLine "current number"/"target number", the "cards" of EZPoints/Points24, Blackjack's cards and the
  dealer's card as its default thoughts name them, ALFWorld's "location" and "holding": the image's two status
  lines).
* `answer_fields(env_id, text)`: the same fields read from a model's answer (None: unparsable).
* `perception_accuracy(env_id, answers, infos)`: the share of answers whose state fields all equal the truth
  (an unparsable answer or a missing field counts as wrong); NaN for an env without state fields.
  `thought_consistency`: NumberLine's stated comparison ("smaller than", ...) against the true state.
* `perception_frames`: frames the engine renders with their info, from random or expert-led play (`make_vec`).
* `train_perception`: the stage. The loss is the answer tokens' NLL (answers whose state fields are true
  and whose action is random, so no decision is taught) plus auxiliary classifiers of every state field on
  the projector's image features, with a higher learning rate for the vision tower and projector. The
  auxiliary heads force the image tokens to carry the digits/cards linearly; the answer loss then makes the
  language model read them (without the heads, SFT of the whole model learns a constant caption).
"""

from __future__ import annotations

import dataclasses
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


# The state fields of each answer format (Blackjack's live in its thoughts).
FIELDS = {"NumberLine-v0": ("current number", "target number"), "EZPoints-v0": ("cards",),
          "Points24-v0": ("cards",), "Blackjack-v0": ("player cards", "dealer card"),
          "ALFWorld-v0": ("location", "holding")}


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
        if "location" not in info or "holding" not in info:  # an env source that does not report them
            return None
        return {"location": str(info["location"]), "holding": str(info["holding"])}
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


def field_spans(env_id: str, text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the state values in an answer text: each number or card of the
    format's field keys (Blackjack: of the cards its thoughts name); [] for an env without fields."""
    key = _key(env_id)
    if key == "Blackjack-v0":
        m = _BLACKJACK_RE.search(text)
        if not m:
            return []
        cards = [(m.start(1) + c.start(), m.start(1) + c.end()) for c in re.finditer(r"[^,\s]+", m.group(1))]
        return cards + [m.span(2)]
    spans = []
    for name in FIELDS.get(key, ()):
        m = re.search(r'"%s":\s*(\[[^\]]*\]|-?\d+|"[^"]*")' % re.escape(name), text)
        if m:
            spans += [(m.start(1) + v.start(), m.start(1) + v.end()) for v in re.finditer(r'[^\s\[\]",]+', m.group(1))]
    return spans


def field_token_mask(tokenizer: Any, env_id: str, text: str) -> list[bool]:
    """Per token of `text` (tokenized without special tokens): whether it overlaps a state-field value."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = field_spans(env_id, text)
    return [any(a < e and b > s for s, e in spans) for a, b in enc["offset_mapping"]]


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


PLAYS = ("random", "expert")


def perception_frames(env_id: str, count: int, *, seed: int = 0, num_envs: int | None = None, cot: bool = True,
                      play: str = "random", **env_kwargs: Any) -> PerceptionSet:
    """`count` frames from seeded play of `env_id`, each with its info and a truthful answer whose action is
    uniformly random and whose thoughts state the state (`sft.state_thoughts`). `play` "random": the envs play
    random actions; "expert": they follow the env's expert (deeper states: ALFWorld's held objects, which
    random play almost never reaches), the answers still naming random actions. By default random play runs
    `count // 2` envs (at most 1024) for two steps each: many deals with few frames each (random play of
    Points24 lasts ~12 steps, so 16 envs give 2,048 frames of only ~160 deals); expert play runs `count // 16`
    envs for 16 steps each, deep enough to reach the states the expert leads to (about half of ALFWorld's
    frames then show a held object, against none in its first two steps)."""
    from vlmrl_fast.sft import record_play

    if count < 1:
        raise ValueError(f"perception_frames: count must be >= 1, got {count}")
    if play not in PLAYS:
        raise ValueError(f"perception_frames: play must be one of {', '.join(PLAYS)}, got {play!r}")
    depth = 2 if play == "random" else 16
    n = max(1, min(num_envs if num_envs is not None else min(1024, count // depth), count))
    steps = []
    record = record_play(env_id, n, seed=seed, salt=0x9E4C, actions=play, cot=cot, state_text=False,
                         thoughts="state", answer_actions="played" if play == "random" else "random", **env_kwargs)
    try:
        while len(steps) < count:
            steps.extend(next(record)[0])
    finally:
        record.close()
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
    """Classifiers of every field slot on the image features [B, T, D] of one image each.

    A linear classifier reads a slot from the flattened features. An attentive one pools the image tokens
    with the slot's own learned query (softmax attention), and the slots of one field (the cards of a hand)
    share its linear classifier: the read-out a language model's attention makes, so the features learn to
    hold each card in the tokens where it is seen, in one code for every slot of the field. `kind`:
    "linear" or "attentive" for every slot, "both" (each slot classified both ways), or "auto": attentive
    for the slots of fields with several slots (cards), linear for single-slot fields (a number, the
    dealer's card)."""

    KINDS = ("linear", "attentive", "both", "auto")

    def __init__(self, tokens: int, dim: int, classes: dict[str, list[str]], kind: str = "linear"):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"AuxHeads: kind must be one of {', '.join(self.KINDS)}, got {kind!r}")
        self.kind = kind
        slots = sorted(classes)
        base = {k: k.split("[")[0] for k in slots}
        multi = {b for b in base.values() if sum(v == b for v in base.values()) > 1}
        linear = [k for k in slots if kind in ("linear", "both") or (kind == "auto" and base[k] not in multi)]
        attentive = [k for k in slots if kind in ("attentive", "both") or (kind == "auto" and base[k] in multi)]
        self.bases = sorted({base[k] for k in attentive})
        shared: dict[str, list[str]] = {b: [] for b in self.bases}
        for k in attentive:
            for c in classes[k]:
                if c not in shared[base[k]]:
                    shared[base[k]].append(c)
        tag = "@" if kind == "both" else ""
        self.names = linear + [k + tag for k in attentive]  # one entry per classifier output
        self.classes = {k: list(classes[k]) for k in linear}
        self.classes.update({k + tag: shared[base[k]] for k in attentive})
        self.heads = nn.ModuleList(nn.Linear(tokens * dim, len(classes[k])) for k in linear)
        self.slot_base = [self.bases.index(base[k]) for k in attentive]
        if attentive:
            self.queries = nn.Parameter(torch.randn(len(attentive), dim) / math.sqrt(dim))
            self.keys = nn.Linear(dim, dim, bias=False)
            self.shared = nn.ModuleList(nn.Linear(dim, len(shared[b])) for b in self.bases)

    @staticmethod
    def slot(name: str) -> str:
        """The field slot an output classifies ("cards[1]@" -> "cards[1]")."""
        return name.rstrip("@")

    def forward(self, feats: torch.Tensor) -> list[torch.Tensor]:
        flat = feats.reshape(len(feats), -1)
        out = [h(flat) for h in self.heads]
        if self.slot_base:
            scores = torch.einsum("btd,sd->bst", self.keys(feats), self.queries) / math.sqrt(feats.shape[-1])
            pooled = torch.einsum("bst,btd->bsd", torch.softmax(scores, -1), feats)
            out += [self.shared[b](pooled[:, i]) for i, b in enumerate(self.slot_base)]
        return out


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
    rebalances: list[dict[str, float]] = dataclasses.field(default_factory=list)  # validation accuracy per env


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
                preds = [lg.argmax(-1).tolist() for lg in heads(_per_image(captured[-1], len(frames)))]
                for j, row in enumerate(rows):
                    right += all(heads.classes[n][preds[k][j]] == row[heads.slot(n)] for k, n in enumerate(heads.names))
    finally:
        hook.remove()
    return right / len(data)


def train_perception(agent: Any, data: Sequence[PerceptionSet], *, steps: int, batch_size: int = 32,
                     learning_rate: float = 3e-4, vision_lr_scale: float = 3.0, aux_weight: float = 1.0,
                     vision_steps: int = 0, field_weight: float = 1.0, env_weights: Sequence[float] | None = None,
                     probe: str = "linear", validation: Sequence[PerceptionSet] | None = None,
                     rebalance_every: int = 0, rebalance_floor: float = 0.1,
                     vision_weights: Sequence[float] | None = None,
                     seed: int = 0, max_grad_norm: float = 1.0, device: torch.device | str | None = None,
                     on_step: Callable[[int, int, float], None] | None = None,
                     on_vision_step: Callable[[int, int, float], None] | None = None) -> StageResult:
    """The perception stage: `steps` AdamW steps (warm-up then cosine to 0) on batches drawn from the frame
    sets (shares `env_weights`, default equal: round robin; with `validation` sets, one per frame set, and
    `rebalance_every` = R, the greedy accuracy on them is measured every R joint steps and the remaining
    steps are shared in proportion to weight x (`rebalance_floor` + error rate): the envs still misread get the
    steps),
    after `vision_steps` steps that train only the vision tower, projector and
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
            feats = _per_image(captured[-1], 1)
            heads[d.env_id] = AuxHeads(feats.shape[1], feats.shape[2], classes, probe).to(device)
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
        token_weights: dict[str, list[list[float]]] | None = None
        if field_weight != 1.0:
            tok = agent.processor.tokenizer
            token_weights = {d.env_id: [[field_weight if f else 1.0 for f in field_token_mask(tok, d.env_id, a)] + [1.0]
                                        for a in d.answers] for d in data}
        if env_weights is not None and len(env_weights) != len(data):
            raise ValueError(f"train_perception: {len(env_weights)} env_weights for {len(data)} frame sets")
        if vision_weights is not None and (len(vision_weights) != len(data) or min(vision_weights) < 0
                                           or sum(vision_weights) <= 0):
            raise ValueError(f"train_perception: vision_weights must be {len(data)} weights >= 0 with a positive "
                             f"sum, got {list(vision_weights)}")
        share = np.asarray(env_weights if env_weights is not None else [1.0] * len(data), dtype=float)
        share = share / share.sum()
        order = _schedule(steps, share)
        if validation is not None and len(validation) != len(data):
            raise ValueError(f"train_perception: {len(validation)} validation sets for {len(data)} frame sets")
        rebalances: list[dict[str, float]] = []
        rng = np.random.default_rng([seed, 0xAE5C])
        if vision_steps > 0 and heads:
            _train_vision(agent, data, heads, labels, captured, vision_steps, 4 * batch_size,
                          learning_rate * vision_lr_scale, rng, device, max_grad_norm, aux_losses, on_vision_step,
                          vision_weights)
        warmup = max(1, steps // 20)
        losses: list[float] = []
        agent.train()
        for step in range(steps):
            if validation is not None and rebalance_every > 0 and step > 0 and step % rebalance_every == 0:
                acc = [held_out_accuracy(agent, v) for v in validation]
                rebalances.append({"step": step, **{v.env_id: a for v, a in zip(validation, acc)}})
                order[step:] = _schedule(steps - step, _rebalanced(share, acc, rebalance_floor))
                agent.train()
            d = data[order[step]]
            idx = rng.choice(len(d), size=min(batch_size, len(d)), replace=False)
            progress = (step - warmup) / max(steps - warmup, 1)
            factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * progress))
            for g in optimizer.param_groups:
                g["lr"] = learning_rate * g["scale"] * factor
            captured.clear()
            loss = answer_token_loss(agent, d.frames[idx], [d.prompts[i] for i in idx],
                                     [answer_ids[d.env_id][i] for i in idx], device,
                                     None if token_weights is None else [token_weights[d.env_id][i] for i in idx])
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
    return StageResult(losses, aux_losses, heads, widths, rebalances)


def _schedule(steps: int, share: np.ndarray) -> list[int]:
    """The frame set of each joint step: a deterministic interleaving in which set k gets share[k] of the
    steps, spread evenly (equal shares: round robin)."""
    done = np.zeros(len(share))
    out = []
    for step in range(steps):
        k = int(np.argmax(share * (step + 1) - done))
        done[k] += 1
        out.append(k)
    return out


def _rebalanced(share: np.ndarray, accuracy: Sequence[float], floor: float = 0.1) -> np.ndarray:
    """Shares of the remaining joint steps: each env's share x (`floor` + its validation error rate),
    normalised (an env read perfectly keeps `floor` of its share; NaN accuracy counts as perfect)."""
    if not floor > 0:
        raise ValueError(f"rebalance floor must be > 0, got {floor}")
    err = np.array([0.0 if math.isnan(a) else 1.0 - a for a in accuracy])
    w = share * (floor + err)
    return w / w.sum()


def _per_image(feats: torch.Tensor, images: int) -> torch.Tensor:
    """Image features as [images, tokens, dim] float (a projector's [images, T, D] or a merger's [images*T, D])."""
    return feats.reshape(images, -1, feats.shape[-1]).float()


def _aux_loss(heads: AuxHeads, feats: torch.Tensor, rows: list[dict[str, str]]) -> torch.Tensor:
    loss = feats.new_zeros(())
    for name, logits in zip(heads.names, heads(_per_image(feats, len(rows)))):
        target = torch.tensor([heads.classes[name].index(r[heads.slot(name)]) for r in rows], device=logits.device)
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
                  aux_losses: list[float], on_step: Callable[[int, int, float], None] | None = None,
                  weights: Sequence[float] | None = None) -> None:
    vision = _vision_params(agent.model)
    params = [p for p in agent.parameters() if p.requires_grad and id(p) in vision]
    params += [p for h in heads.values() for p in h.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sets = [d for d in data if d.env_id in heads]
    share = np.asarray([w for d, w in zip(data, weights or [1.0] * len(data)) if d.env_id in heads], dtype=float)
    order = _schedule(steps, share / share.sum())  # equal shares: round robin
    warmup = max(1, steps // 20)
    agent.train()
    for step in range(steps):
        d = sets[order[step]]
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
        if on_step is not None:
            on_step(step + 1, steps, aux_losses[-1])


def _forward_inputs(agent: Any, frames: np.ndarray, prompt_texts: list[str], device: Any) -> dict[str, Any]:
    b = agent.prompt_batch(frames, prompt_texts).to(device)
    return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, **b.vision}


# -- the embedded default model learns to read -----------------------------------------------------------
@dataclass(frozen=True)
class ReaderRecipe:
    """How the embedded default model is taught to read the games' images when it is built
    (`teach_reading`): the perception stage on frames of every env in `envs` (joint steps shared by
    `env_weights`: the four cards of Points24 and Blackjack's hands take longer than two numbers)."""

    envs: tuple[str, ...] = ("NumberLine-v0", "EZPoints-v0", "Points24-v0", "Blackjack-v0", "ALFWorld-v0")
    expert_play: tuple[str, ...] = ("ALFWorld-v0",)  # envs whose frames come from expert-led play (`perception_frames`)
    env_weights: tuple[float, ...] = (1.0, 1.5, 2.5, 2.5, 3.0)
    frames: int = 2048
    held_out: int = 128
    vision_steps: int = 800  # shared by vision_weights: ALFWorld's status lines need most of them
    steps: int = 2200
    batch_size: int = 16
    learning_rate: float = 2e-3
    vision_lr_scale: float = 0.25
    field_weight: float = 5.0
    probe: str = "auto"
    validation: int = 64  # frames per env whose greedy accuracy re-shares the remaining steps ...
    rebalance_every: int = 250  # ... every so many joint steps (0: fixed shares) ...
    rebalance_floor: float = 0.1  # ... in proportion to weight x (floor + validation error rate)
    vision_weights: tuple[float, ...] | None = (1.0, 1.0, 1.0, 1.0, 6.0)  # shares of the vision-only steps
    threads: int = 2


READER = ReaderRecipe()  # the recipe of the embedded default model (models/tiny.default_model_path)
READER_REPORT = "perception.json"


def teach_reading(model_dir: Any, *, seed: int = 0, recipe: ReaderRecipe | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Teach the model saved in `model_dir` to read the images of `recipe.envs` (the perception stage on
    seeded random play of each, all envs in one stage), save it back in place, and write
    `model_dir/perception.json`: per env the held-out perception accuracy of greedy answers (`answer`) and of
    the stage's auxiliary classifiers (`probe`), with the recipe, the seed and the seconds taken.
    Deterministic from `seed` for a given machine (`recipe.threads` torch threads during the stage)."""
    import time
    from pathlib import Path

    from vlmrl_fast.config import load_config
    from vlmrl_fast.ppo import build_agent

    recipe = recipe if recipe is not None else READER
    model_dir = Path(model_dir)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            cfg = load_config(None, dict(model=str(model_dir), lora=False, max_new_tokens=96, seed=seed))
            agent = build_agent(cfg, "cpu")
            def frames(e: str, count: int, salt: int) -> PerceptionSet:
                play = "expert" if e in recipe.expert_play else "random"
                return perception_frames(e, count, seed=seed * 1000 + salt, play=play)

            train = [frames(e, recipe.frames, 1) for e in recipe.envs]
            held = [frames(e, recipe.held_out, 2) for e in recipe.envs]
            val = [frames(e, recipe.validation, 3) for e in recipe.envs] \
                if recipe.rebalance_every > 0 and recipe.validation > 0 else None
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=recipe.vision_steps + recipe.steps, desc="teaching the tiny VLM to read",
                           dynamic_ncols=True, leave=False)
            try:
                stage = train_perception(
                    agent, train, steps=recipe.steps, vision_steps=recipe.vision_steps,
                    batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
                    vision_lr_scale=recipe.vision_lr_scale, field_weight=recipe.field_weight,
                    env_weights=recipe.env_weights, probe=recipe.probe, seed=seed, validation=val,
                    rebalance_every=recipe.rebalance_every, rebalance_floor=recipe.rebalance_floor,
                    vision_weights=recipe.vision_weights,
                    on_step=(lambda *_: bar.update(1)) if bar is not None else None,
                    on_vision_step=(lambda *_: bar.update(1)) if bar is not None else None)
            finally:
                if bar is not None:
                    bar.close()
            accuracy = {d.env_id: {"answer": held_out_accuracy(agent, d), "probe": probe_accuracy(agent, stage, d)}
                        for d in held}
            agent.model.save_pretrained(model_dir)
    finally:
        torch.set_num_threads(threads)
    report = {"seed": seed, "recipe": dataclasses.asdict(recipe), "accuracy": accuracy,
              "last_loss": stage.losses[-1] if stage.losses else None, "rebalances": stage.rebalances,
              "seconds": round(time.perf_counter() - t0, 1)}
    (model_dir / READER_REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report
