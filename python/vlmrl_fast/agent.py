"""The VLM agent: batched prompting and generation, and the one-pass evaluation PPO needs.

One rollout step of N environments is: `prompt_batch` (chat template, one image per prompt, left
padding) -> `generate` (ONE batched `generate` call) -> the parser -> `action_token_starts` ->
`evaluate` (ONE forward pass over prompt + answer: per-token log-probs at the sampling
temperature, the lambda-weighted action log-prob, the value of the last prompt token).

The action log-prob follows the paper:
    log pi(a|s) = lam * sum(log p of CoT tokens) + sum(log p of action tokens)
where the action tokens start at the first token that covers the answer's "action" key (found
from the parser's character offset and the tokenizer's decoding, so any tokenizer works). An
answer without an action key counts as all chain of thought: every token is weighted by lam and
the action part is 0.
"""

from __future__ import annotations

import contextlib

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlmrl_fast.config import PREPROCESS_MODES
from vlmrl_fast.models.value_head import ValueHead
from vlmrl_fast.ops import token_logprobs
from vlmrl_fast.parser import first_action_token

_VISION_KEYS_NOT_BATCHED = ("pixel_values", "pixel_values_videos")
TOKEN_ROW_KEYS = ("mm_token_type_ids", "token_type_ids")
"""Vision inputs with one entry per prompt token (Qwen's mm_token_type_ids, Gemma 3's token_type_ids)."""


@dataclass
class PromptBatch:
    """Tokenized prompts of N observations: left-padded `input_ids` / `attention_mask` [N, P] and
    the processor's vision inputs (`pixel_values`, `image_sizes`, `image_grid_thw`,
    `mm_token_type_ids`, ...) in `vision`. Kept as is for the PPO epochs."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    vision: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> PromptBatch:
        """The same batch on `device`."""
        return PromptBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            {k: v.to(device) for k, v in self.vision.items()},
        )

    def select(self, indices) -> PromptBatch:
        """Rows `indices` (list, array or tensor of ints), with leading all-padding columns dropped.

        Qwen2-VL style flattened patches (`pixel_values` [sum of patches, D] beside
        `image_grid_thw`) are split per image and regathered.
        """
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        n = len(self)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"PromptBatch.select: indices must be in [0, {n}), got {idx.tolist()}")
        mask = self.attention_mask[idx]
        first = int(mask.any(0).float().argmax()) if mask.numel() else 0
        vision = {}
        grid = self.vision.get("image_grid_thw")
        for key, value in self.vision.items():
            if key in _VISION_KEYS_NOT_BATCHED and grid is not None and value.shape[0] != n:
                sizes = grid.prod(-1).tolist()
                chunks = torch.split(value, sizes)
                vision[key] = torch.cat([chunks[i] for i in idx.tolist()]) if idx.numel() else value[:0]
            elif value.shape[0] == n:
                vision[key] = value[idx]
                if key in TOKEN_ROW_KEYS:
                    vision[key] = vision[key][:, first:]
            else:
                raise ValueError(f"PromptBatch.select: vision input {key!r} has no per-row layout")
        return PromptBatch(self.input_ids[idx][:, first:], mask[:, first:], vision)


@dataclass
class Generation:
    """Answers of one `generate` call: decoded `texts` (special tokens skipped) and `answer_ids`
    (prompt and padding excluded; stops at EOS, which is kept as the last id when produced).
    `logprobs` holds per-token log-probs of the sampling distribution when asked for."""

    texts: list[str]
    answer_ids: list[list[int]]
    logprobs: list[torch.Tensor] | None = None


@dataclass
class Evaluation:
    """Differentiable results of `Agent.evaluate`, one entry per row, float32 [N]."""

    logprob: torch.Tensor
    cot_logprob: torch.Tensor
    action_logprob: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    num_tokens: torch.Tensor
    token_logprobs: torch.Tensor
    """Per-token log-probs [N, A] (0 on padding)."""


class Agent(nn.Module):
    """A VLM policy, with a value head unless `with_value_head` is False (the value-free algorithms).

    `model`/`processor` come from `vlmrl_fast.models.load_model`; `value_head` defaults to a fresh
    `ValueHead` sized from the model's text config, on the model's device; without one,
    `evaluate` reports values of 0 (no gradient). `temperature` is both
    the sampling temperature and the one log-probs are evaluated at (0 = greedy; log-probs then use
    temperature 1). `preprocess` picks how images become `pixel_values` (see `PREPROCESS_MODES`).
    """

    def __init__(self, model, processor, value_head: ValueHead | None = None, *,
                 temperature: float = 0.2, max_new_tokens: int = 256, preprocess: str = "auto",
                 with_value_head: bool = True):
        super().__init__()
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"Agent: preprocess must be one of {PREPROCESS_MODES}, got {preprocess!r}")
        if temperature < 0:
            raise ValueError(f"Agent: temperature must be >= 0, got {temperature}")
        if max_new_tokens < 1:
            raise ValueError(f"Agent: max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        hidden = model.config.get_text_config().hidden_size
        self.hidden_size = int(hidden)
        self.value_head: ValueHead | None = None
        if with_value_head:
            self.value_head = value_head if value_head is not None else ValueHead(hidden)
            self.value_head.to(self.device)
        self.temperature = float(temperature)
        self.max_new_tokens = int(max_new_tokens)
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id
        self.suppressed_token_ids = self._placeholder_token_ids()
        self.preprocess = preprocess
        from vlmrl_fast.models.loading import is_text_only

        self.text_only = is_text_only(processor)  # a causal LM: prompts only, images are ignored
        self.image_pipeline = self._image_pipeline(preprocess)

    def _placeholder_token_ids(self) -> list[int]:
        # Image/video placeholder ids must never be generated: the model would take a sampled one
        # for an image slot and fail. They are removed from the policy in generate (suppressed)
        # and in evaluate (masked) alike, so both see the same distribution.
        config = self.base_model.config
        found = set()
        for source in (self.processor, config):
            for attr in ("image_token_id", "image_token_index", "video_token_id",
                         "vision_start_token_id", "vision_end_token_id", "boi_token_id", "eoi_token_id"):
                value = getattr(source, attr, None)
                if isinstance(value, int) and value >= 0 and value != self.eos_token_id:
                    found.add(value)
        return sorted(found)

    def _image_pipeline(self, mode: str):
        """The native image pipeline for this processor, or None (the processor's own path)."""
        if mode == "hf":
            return None
        from vlmrl_fast.preprocess import ImagePipeline

        proc = self.processor
        why = None
        if self.text_only:
            return None
        if getattr(proc, "image_processor", None) is None:
            why = f"{type(proc).__name__} holds no image processor"
        elif not (hasattr(proc, "replace_image_token") and hasattr(proc, "get_text_with_replacements")):
            why = f"{type(proc).__name__} cannot expand image placeholders from precomputed inputs"
        else:
            # "auto" falls back quietly; "native" raises below. A bf16 model gets bf16 pixel values
            # written natively: bit-equal to the model's own cast of the processor's float32 values.
            dtype = torch.bfloat16 if getattr(self.base_model, "dtype", None) == torch.bfloat16 else torch.float32
            pipeline = ImagePipeline.from_processor(proc.image_processor, dtype=dtype, warn=False)
            if pipeline.native:
                return pipeline
            why = f"{type(proc.image_processor).__name__} has no native pipeline"
        if mode == "native":
            raise ValueError(f"Agent: preprocess='native' is not available: {why}; use 'auto' or 'hf'")
        return None

    @property
    def device(self) -> torch.device:
        """Device of the model's (first) parameters."""
        return next(self.model.parameters()).device

    @property
    def base_model(self):
        """The transformers model under any peft wrapper."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    # ------------------------------------------------------------------ prompting
    def chat_text(self, prompt: str) -> str:
        """One user message (an image, then `prompt`) through the model's chat template, ready
        for generation."""
        if self.text_only:
            messages = [{"role": "user", "content": prompt}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prompt_batch(self, images, prompts: list[str], *, vision=None) -> PromptBatch:
        """Tokenize N prompts with one image each: images uint8 [N, H, W, 3] (array or list).

        `vision`: the model's image inputs for these images, already computed (e.g. by
        `vlmrl_fast.preprocess.ImagePipeline`: `pixel_values`, `image_grid_thw`, ...); the Hugging
        Face image processor is then skipped and only the text side runs. `images` may be None then.
        Without it, a uint8 array [N, H, W, 3] goes through the agent's native image pipeline when
        it has one (`preprocess` "auto"/"native"), otherwise through the Hugging Face processor.
        """
        n = len(prompts)
        if n == 0:
            raise ValueError("prompt_batch: empty batch")
        texts = [self.chat_text(p) for p in prompts]
        if self.text_only:  # the images (the blank frames of text envs, or any frame) are not read
            enc = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
            return PromptBatch(enc["input_ids"], enc["attention_mask"], {}).to(self.device)
        if vision is not None:
            return self._prompt_batch_with_vision(texts, dict(vision))
        if len(images) != n:
            raise ValueError(f"prompt_batch: {len(images)} images but {n} prompts")
        if (self.image_pipeline is not None and isinstance(images, np.ndarray) and images.dtype == np.uint8
                and images.ndim == 4 and images.shape[-1] == 3):
            # The whole batch in one native call (GIL released, threads over images).
            return self._prompt_batch_with_vision(texts, dict(self.image_pipeline(images)))
        imgs = [np.ascontiguousarray(im) for im in images]
        for i, im in enumerate(imgs):
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3:
                raise ValueError(f"prompt_batch: image {i} must be uint8 [H, W, 3], got {im.dtype} {im.shape}")
        # Gemma 3's processor takes the images of each prompt as a list of their own
        per_prompt = type(self.processor).__name__.startswith("Gemma3")
        enc = self.processor(images=[[im] for im in imgs] if per_prompt else imgs, text=texts, padding=True,
                             return_tensors="pt")
        vision = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        return PromptBatch(enc["input_ids"], enc["attention_mask"], vision).to(self.device)

    def _prompt_batch_with_vision(self, texts: list[str], vision: dict) -> PromptBatch:
        # The text side of the processor call: each image placeholder expanded to as many image
        # tokens as the given image inputs need (transformers 5 processor API).
        proc = self.processor
        if not hasattr(proc, "replace_image_token") or not hasattr(proc, "get_text_with_replacements"):
            raise ValueError(f"prompt_batch: precomputed vision inputs need a transformers 5 processor; "
                             f"{type(proc).__name__} has no replace_image_token")
        # The processors read only shapes (and grids) here, some of them through numpy, which has no
        # bfloat16: they get a zero-stride float32 stand-in of each bfloat16 tensor's shape.
        shapes = {k: torch.zeros((), dtype=torch.float32).expand(v.shape)
                  if isinstance(v, torch.Tensor) and v.dtype == torch.bfloat16 else v for k, v in vision.items()}
        unused = list(getattr(proc, "unused_input_names", None) or [])
        if "num_crops" in unused and "num_crops" not in shapes:  # Gemma 3 without pan-and-scan: no crops
            shapes["num_crops"] = [0] * len(texts)
        try:
            repl = [proc.replace_image_token(shapes, image_idx=i) for i in range(len(texts))]
        except (NotImplementedError, KeyError, IndexError) as exc:
            raise ValueError(f"prompt_batch: cannot expand image placeholders of {type(proc).__name__} from "
                             f"the given vision inputs {sorted(vision)} ({exc!r})") from None
        expanded, _ = proc.get_text_with_replacements(list(texts), repl)
        enc = self.tokenizer(expanded, padding=True, return_tensors="pt")
        vision = {k: torch.as_tensor(v) for k, v in vision.items() if k not in unused}
        if getattr(proc, "return_mm_token_type_ids", False):
            # Gemma 3's processor returns them as token_type_ids
            key = "token_type_ids" if type(proc).__name__.startswith("Gemma3") else "mm_token_type_ids"
            vision[key] = torch.as_tensor(proc.create_mm_token_type_ids(enc["input_ids"]))
        return PromptBatch(enc["input_ids"], enc["attention_mask"], vision).to(self.device)

    # ------------------------------------------------------------------ generation
    def _generation_kwargs(self) -> dict:
        sample = self.temperature > 0
        # Everything that reshapes the distribution is switched off explicitly (the model's
        # generation_config or transformers' defaults, e.g. top_k=50, would otherwise apply), so
        # that the sampling distribution is exactly softmax(logits / T), the one evaluate scores.
        return dict(
            max_new_tokens=self.max_new_tokens,
            do_sample=sample,
            temperature=self.temperature if sample else None,
            top_k=0 if sample else None,
            top_p=1.0 if sample else None,
            min_p=None,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            suppress_tokens=self.suppressed_token_ids or None,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            use_cache=True,
        )

    @torch.no_grad()
    def generate(self, batch: PromptBatch, *, seed: int | None = None,
                 return_logprobs: bool = False) -> Generation:
        """Sample one answer per prompt with ONE batched `generate` call (KV cache on).

        `seed` makes the sampling reproducible without touching the global RNG state.
        `return_logprobs` also returns each answer token's log-prob under the distribution it was
        sampled from (temperature applied), for checks against `evaluate`.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=self._rng_devices(), enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                out = self.model.generate(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    **batch.vision,
                    **self._generation_kwargs(),
                    return_dict_in_generate=True,
                    output_scores=return_logprobs,
                )
        finally:
            self.model.train(was_training)
        new = out.sequences[:, batch.input_ids.shape[1]:].tolist()
        answer_ids = []
        for row in new:
            cut = row.index(self.eos_token_id) + 1 if self.eos_token_id in row else len(row)
            answer_ids.append(row[:cut])
        texts = self.tokenizer.batch_decode(answer_ids, skip_special_tokens=True)
        logprobs = None
        if return_logprobs:
            steps = torch.stack(out.scores, 1).float()  # [N, steps, V], temperature already applied
            picked = torch.log_softmax(steps, -1).gather(-1, torch.tensor(new, device=steps.device)[..., None])
            logprobs = [picked[i, : len(a), 0].cpu() for i, a in enumerate(answer_ids)]
        return Generation(texts, answer_ids, logprobs)

    def _rng_devices(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    def encode_answers(self, texts: list[str]) -> list[list[int]]:
        """Token ids of answer texts as the agent would generate them (no special tokens added,
        EOS appended), e.g. for SFT demonstrations scored with `evaluate`."""
        enc = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [list(ids) + [self.eos_token_id] for ids in enc]

    # ------------------------------------------------------------------ CoT / action split
    def token_offsets(self, answer_ids: list[int]) -> list[tuple[int, int]]:
        """Character span of each answer token in the decoded answer text.

        Computed by decoding every prefix (special tokens skipped, as in `Generation.texts`), so
        the spans are exact for any tokenizer, whatever its merges or byte fallbacks.
        """
        if not answer_ids:
            return []
        prefixes = [answer_ids[: i + 1] for i in range(len(answer_ids))]
        ends = [len(t) for t in self.tokenizer.batch_decode(prefixes, skip_special_tokens=True)]
        spans, start = [], 0
        for end in ends:
            spans.append((start, end))
            start = max(start, end)
        return spans

    def action_token_starts(self, answer_ids: list[list[int]], texts: list[str], key_starts) -> list[int]:
        """First action token of each answer from the parser's `key_start` (a character offset
        in `texts[i]`, -1 when the answer has no action key). No key: len(answer_ids[i]), i.e.
        the whole answer counts as chain of thought."""
        key_starts = np.asarray(key_starts).tolist()
        if not len(answer_ids) == len(texts) == len(key_starts):
            raise ValueError("action_token_starts: answer_ids, texts and key_starts differ in length")
        starts = []
        for ids, ks in zip(answer_ids, key_starts):
            if ks < 0:
                starts.append(len(ids))
            else:
                starts.append(first_action_token(self.token_offsets(ids), int(ks)))
        return starts

    # ------------------------------------------------------------------ evaluation
    def _position_ids(self, input_ids, attention_mask, vision):
        # The positions generate() used: derived from the attention mask (left padding), and for
        # M-RoPE models (Qwen2-VL) from the image grid as well. generate's own helper gives them
        # exactly; a model without it gets cumsum positions.
        base = self.base_model
        prepare = getattr(base, "_prepare_position_ids_for_generation", None)
        kwargs = {"attention_mask": attention_mask}
        kwargs.update({k: v for k, v in vision.items() if k in ("image_grid_thw", "mm_token_type_ids")})
        if prepare is not None:
            try:
                return prepare(input_ids, kwargs)
            except (TypeError, KeyError, AttributeError):
                pass
        pos = attention_mask.long().cumsum(-1) - 1
        return pos.masked_fill(attention_mask == 0, 0)

    def evaluate(self, batch: PromptBatch, answer_ids: list[list[int]], action_starts, *, lam: float) -> Evaluation:
        """ONE forward pass over prompt + answer (differentiable).

        Per-token log-probs are taken at logits / temperature (temperature 1 for greedy agents).
        `logprob` = lam * `cot_logprob` + `action_logprob`, where tokens before
        `action_starts[i]` are CoT and the rest action (start = len(answer) means no action
        key: all CoT). `value` is the value head on the last prompt token's final hidden state;
        `entropy` the mean per-token entropy of the answer. Runs in the module's current mode:
        LoRA dropout is active in train mode, so old log-probs for PPO should be computed in eval
        mode or with lora_dropout=0.
        """
        n = len(batch)
        if len(answer_ids) != n or len(action_starts) != n:
            raise ValueError(f"evaluate: batch has {n} rows, answer_ids {len(answer_ids)}, "
                             f"action_starts {len(action_starts)}")
        device = batch.input_ids.device
        lengths = torch.tensor([len(a) for a in answer_ids], device=device)
        width = max(1, int(lengths.max()))
        answers = torch.full((n, width), self.pad_token_id, dtype=torch.long, device=device)
        for i, a in enumerate(answer_ids):
            answers[i, : len(a)] = torch.as_tensor(a, dtype=torch.long)
        positions = torch.arange(width, device=device)[None]
        answer_mask = positions < lengths[:, None]
        input_ids = torch.cat([batch.input_ids, answers], 1)
        attention_mask = torch.cat([batch.attention_mask, answer_mask.to(batch.attention_mask.dtype)], 1)
        vision = dict(batch.vision)
        for key in TOKEN_ROW_KEYS:  # answer tokens are text
            if key in vision:
                vision[key] = torch.cat([vision[key], vision[key].new_zeros(n, width)], 1)

        captured: dict[str, torch.Tensor] = {}
        head = self.model.get_output_embeddings()
        hook = head.register_forward_hook(lambda _m, args, _o: captured.__setitem__("h", args[0]))
        try:
            with _checkpointed_layers_in_train_mode(self.model):
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=self._position_ids(input_ids, attention_mask, vision),
                    **vision,
                    logits_to_keep=width + 1,  # the last prompt token and every answer token
                    use_cache=False,
                )
        finally:
            hook.remove()
        logits = out.logits[:, :-1]  # position t predicts answer token t
        if self.suppressed_token_ids:
            vocab_mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=device)
            vocab_mask[[i for i in self.suppressed_token_ids if i < logits.shape[-1]]] = True
            # A finite fill 1e4 below the largest logit: its probability underflows to exactly 0
            # as generate's -inf does, without the NaN that 0 * -inf would put into the entropy.
            logits = logits.masked_fill(vocab_mask, logits.detach().amax() - 1e4)
        temperature = self.temperature if self.temperature > 0 else 1.0
        logp, ent = token_logprobs(logits, answers, temperature=temperature, return_entropy=True)
        logp = logp * answer_mask
        starts = torch.as_tensor(np.asarray(action_starts, dtype=np.int64), device=device)
        is_cot = (positions < starts[:, None]) & answer_mask
        cot = (logp * is_cot).sum(1)
        action = (logp * (answer_mask & ~is_cot)).sum(1)
        num = answer_mask.sum(1)
        entropy = (ent * answer_mask).sum(1) / num.clamp(min=1)
        h = captured["h"][:, 0]
        value = self.value_head(h) if self.value_head is not None else h.new_zeros(n).detach()
        return Evaluation(
            logprob=lam * cot + action,
            cot_logprob=cot,
            action_logprob=action,
            value=value,
            entropy=entropy,
            num_tokens=num,
            token_logprobs=logp,
        )

    def forward(self, batch: PromptBatch, answer_ids, action_starts, *, lam: float) -> Evaluation:
        """Same as `evaluate` (so accelerate / DDP wrappers see a forward)."""
        return self.evaluate(batch, answer_ids, action_starts, lam=lam)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the adapter (peft) or the full weights, the processor, the value head and the
        agent settings into `directory` (created if needed). `state_dict`: the agent's full state
        dict gathered from sharded weights (FSDP, ZeRO-3), written instead of the local parameters."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        is_peft = hasattr(self.model, "peft_config")
        head = self.value_head.state_dict() if self.value_head is not None else {}
        if state_dict is None:
            self.model.save_pretrained(out / "model")
        else:
            model_part = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
            head = {k[len("value_head."):]: v for k, v in state_dict.items() if k.startswith("value_head.")}
            self.model.save_pretrained(out / "model", state_dict=model_part)
        self.processor.save_pretrained(out / "model")
        if self.value_head is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in head.items()}
            save_file(state, str(out / "value_head.safetensors"))
        meta = {
            "format": 1,
            "adapter": is_peft,
            "base_model": str(self.base_model.name_or_path) if is_peft else None,
            "hidden_size": self.hidden_size,
            "value_head": self.value_head is not None,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "preprocess": self.preprocess,
        }
        (out / "agent.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike, settings=None) -> Agent:
        """Rebuild an agent written by `save`. With an adapter the base model is loaded from its
        recorded path (with `settings`, LoRA off) and the adapter put on it, trainable."""
        from safetensors.torch import load_file

        from vlmrl_fast.models.loading import load_model, load_processor
        from vlmrl_fast.models.settings import ModelSettings

        src = Path(directory)
        meta_path = src / "agent.json"
        if not meta_path.is_file():
            raise ValueError(f"agent directory {src}: no agent.json (not written by Agent.save)")
        meta = json.loads(meta_path.read_text())
        settings = settings or ModelSettings(lora=meta["adapter"])
        if meta["adapter"]:
            from dataclasses import replace

            from peft import PeftModel

            model, _ = load_model(meta["base_model"], replace(settings, lora=False))
            model = PeftModel.from_pretrained(model, src / "model", is_trainable=True)
            processor = load_processor(src / "model", require_config=False, image_backend=settings.image_backend)
        else:
            from dataclasses import replace

            model, processor = load_model(src / "model", replace(settings, lora=False))
        head = None
        if meta.get("value_head", True):  # agents saved before value-free training always had one
            head = ValueHead(meta["hidden_size"])
            head.load_state_dict(load_file(str(src / "value_head.safetensors")))
        return cls(model, processor, head, temperature=meta["temperature"],
                   max_new_tokens=meta["max_new_tokens"], preprocess=meta.get("preprocess", "auto"),
                   with_value_head=head is not None)


@contextlib.contextmanager
def _checkpointed_layers_in_train_mode(model: nn.Module):
    """transformers checkpoints a layer (GradientCheckpointingLayer) only when the layer is in train mode,
    and the policy stays in eval mode (no dropout) through rollout and update: without this,
    `gradient_checkpointing` would keep every layer's activations. While gradients are recorded, only the
    checkpointed layers' own flag is set (their sub-modules, dropout included, stay in eval mode), so the
    result is the same and the layers are recomputed in the backward pass instead of stored."""
    if not torch.is_grad_enabled():
        yield
        return
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True
              and not m.training and _is_checkpointing_layer(m)]
    for m in layers:
        m.training = True
    try:
        yield
    finally:
        for m in layers:
            m.training = False


def _is_checkpointing_layer(module: nn.Module) -> bool:
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # pragma: no cover - older transformers
        return False
    return isinstance(module, GradientCheckpointingLayer)
