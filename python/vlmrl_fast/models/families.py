"""`--model tiny:FAMILY`: the test-size tiny model of a family, built offline and cached.

FAMILY is one of `TINY_MODEL_FAMILIES`: the VLM families of `vlmrl_fast.models.tiny` (llava, llava_next,
qwen2_vl) and those built here (qwen2_5_vl, qwen3_vl, gemma3, idefics3), each a real transformers class
from its config, with the tokenizer trained on the prompt/answer corpus and a chat template; and "text",
a tiny causal language model (`LlamaForCausalLM`) with the same tokenizer and chat template, for
text-only agents (`AutoModelForCausalLM`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from vlmrl_fast.models import tiny
from vlmrl_fast.models.corpus import corpus, corpus_digest

FAMILIES_VERSION = "f1"
NEW_FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen3_vl", "gemma3", "idefics3")
TINY_MODEL_FAMILIES: tuple[str, ...] = (*tiny.TINY_FAMILIES, *NEW_FAMILIES, "text")


def _text_template() -> str:
    return tiny._CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "")


def _build_text(tokenizer, size: str):
    """A tiny Llama causal LM; the tokenizer carries the chat template (no processor)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny._llama_text_config(tokenizer, size))
    tokenizer.chat_template = _text_template()
    return model, tokenizer


def _with_tokens(tokenizer, tokens: list[str], **named: str):
    """The tokenizer with `tokens` added as special tokens and `named` ones as attributes (e.g. boi_token)."""
    from transformers import PreTrainedTokenizerFast

    out = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer, eos_token=tiny.END_TOKEN, pad_token=tiny.PAD_TOKEN,
        padding_side="left", model_max_length=2048, extra_special_tokens=named or None)
    new = [t for t in [*tokens, *named.values()] if t not in out.get_vocab()]
    if new:
        out.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    return out


def _qwen_text(tokenizer, **extra) -> dict:
    dims = tiny._text_dims("test")
    head_dim = dims["hidden_size"] // dims["num_attention_heads"]
    half = head_dim // 2  # mrope splits the rotary half-dim into (temporal, height, width)
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    return {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 2048,
        "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section, **extra},
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        **dims,
    }


def _qwen_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return {"image_token_id": ids("<|image_pad|>"), "video_token_id": ids("<|video_pad|>"),
            "vision_start_token_id": ids("<|vision_start|>"), "vision_end_token_id": ids("<|vision_end|>")}


def _build_qwen2_5_vl(tokenizer, size: str):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    text = _qwen_text(tokenizer)
    vision = {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
              "out_hidden_size": text["hidden_size"], "patch_size": tiny.PATCH_SIZE, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "window_size": 56, "fullatt_block_indexes": [1]}
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tokenizer))
    model = Qwen2_5_VLForConditionalGeneration(config)
    pixels = {"shortest_edge": tiny.IMAGE_SIZE ** 2, "longest_edge": tiny.IMAGE_SIZE ** 2}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, patch_size=tiny.PATCH_SIZE, merge_size=2),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=pixels, patch_size=tiny.PATCH_SIZE, merge_size=2),
        chat_template=tiny.chat_template("qwen2_vl"),
    )
    return model, processor


def _build_qwen3_vl(tokenizer, size: str):
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    patch = 16  # Qwen3-VL's patch size
    image = 128
    text = _qwen_text(tokenizer, mrope_interleaved=True)
    text["head_dim"] = text["hidden_size"] // text["num_attention_heads"]
    vision = {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
              "out_hidden_size": text["hidden_size"], "patch_size": patch, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]}
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tokenizer))
    model = Qwen3VLForConditionalGeneration(config)
    pixels = {"shortest_edge": image * image, "longest_edge": image * image}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, patch_size=patch, merge_size=2,
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(size=pixels, patch_size=patch, merge_size=2),
        chat_template=tiny.chat_template("qwen2_vl"),
    )
    return model, processor


_GEMMA_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}


def _build_gemma3(tokenizer, size: str):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    tokenizer = _with_tokens(tokenizer, [], **_GEMMA_TOKENS)
    dims = tiny._text_dims("test")
    text = {"vocab_size": len(tokenizer), "max_position_embeddings": 2048, "num_key_value_heads": 2,
            "head_dim": dims["hidden_size"] // dims["num_attention_heads"], "sliding_window": 64,
            "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None,
            **dims}
    vision = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": tiny.IMAGE_SIZE, "patch_size": tiny.PATCH_SIZE}
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=16,
                          boi_token_index=ids(_GEMMA_TOKENS["boi_token"]),
                          eoi_token_index=ids(_GEMMA_TOKENS["eoi_token"]),
                          image_token_index=ids(_GEMMA_TOKENS["image_token"]))
    model = Gemma3ForConditionalGeneration(config)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": tiny.IMAGE_SIZE, "width": tiny.IMAGE_SIZE},
                                             image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=tokenizer, image_seq_length=16,
        chat_template=tiny._CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", _GEMMA_TOKENS["boi_token"]),
    )
    return model, processor


def _build_idefics3(tokenizer, size: str):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    rows = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer = _with_tokens(tokenizer, ["<fake_token_around_image>", "<image>", "<end_of_utterance>",
                                         "<global-img>", *rows])
    image, patch, scale = tiny.IMAGE_SIZE, tiny.PATCH_SIZE, 2
    text = tiny._llama_text_config(tokenizer, "test")
    vision = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": image, "patch_size": patch}
    config = Idefics3Config(text_config=text, vision_config=vision, scale_factor=scale,
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    model = Idefics3ForConditionalGeneration(config)
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(size={"longest_edge": image}, max_image_size={"longest_edge": image},
                                               do_image_splitting=False),
        tokenizer=tokenizer, image_seq_len=(image // patch) ** 2 // scale ** 2,
        chat_template=tiny._CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<image>"),
    )
    return model, processor


_BUILDERS = {"text": _build_text, "qwen2_5_vl": _build_qwen2_5_vl, "qwen3_vl": _build_qwen3_vl,
             "gemma3": _build_gemma3, "idefics3": _build_idefics3}


def build_tiny_model(family: str, out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Build the test-size tiny model of `family` deterministically from `seed` into `out_dir`."""
    if family in tiny.TINY_FAMILIES:
        return tiny.build_tiny_vlm(family, out_dir, seed=seed)
    if family not in _BUILDERS:
        raise ValueError(f"unknown tiny model family {family!r}; choose one of {', '.join(TINY_MODEL_FAMILIES)}")
    return tiny.build_and_save(_BUILDERS[family], "test", out_dir, seed=seed)


def tiny_model_path(family: str, seed: int = 0) -> Path:
    """The cached folder of `tiny:FAMILY` (built on first use, renamed into place when complete)."""
    if family not in TINY_MODEL_FAMILIES:
        raise ValueError(f"model tiny:{family}: unknown family; choose one of {', '.join(TINY_MODEL_FAMILIES)}")
    key = f"tiny-{family}-{tiny.TINY_VERSION}{FAMILIES_VERSION}-{corpus_digest(corpus())}-seed{seed}"
    path = tiny._cache_root() / key
    if (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=path.parent))
    try:
        build_tiny_model(family, tmp, seed=seed)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
