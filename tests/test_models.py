"""Model loading, the tiny VLM builders, LoRA, and the value head: real tiny models on the CPU."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vlmrl_fast.models import (
    TINY_FAMILIES,
    ModelSettings,
    ValueHead,
    build_tiny_vlm,
    default_model_path,
    load_model,
)
from vlmrl_fast.models.tiny import TINY_VERSION, train_tokenizer
from vlmrl_fast.models.corpus import corpus

EXPECTED_CLASS = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_vlm(f, root / f, seed=0) for f in TINY_FAMILIES}


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_family_loads_through_auto_classes(tiny_dirs, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_dirs[family])
    processor = AutoProcessor.from_pretrained(tiny_dirs[family])
    assert type(model).__name__ == EXPECTED_CLASS[family]
    assert processor.chat_template
    n_params = sum(p.numel() for p in model.parameters())
    assert 50_000 < n_params < 5_000_000
    # The chat template renders an image placeholder that the processor expands into image tokens.
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Target"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|assistant|>")
    enc = processor(images=[np.full((300, 300, 3), 255, np.uint8)], text=[text], return_tensors="pt")
    image_id = model.config.image_token_id
    assert int((enc["input_ids"] == image_id).sum()) > 1


def test_build_is_deterministic_in_the_seed(tmp_path):
    a = load_file(str(build_tiny_vlm("llava", tmp_path / "a", seed=3) / "model.safetensors"))
    b = load_file(str(build_tiny_vlm("llava", tmp_path / "b", seed=3) / "model.safetensors"))
    c = load_file(str(build_tiny_vlm("llava", tmp_path / "c", seed=4) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].numel() > 16)
    tok_a = json.loads((tmp_path / "a" / "tokenizer.json").read_text())
    tok_b = json.loads((tmp_path / "b" / "tokenizer.json").read_text())
    assert tok_a["model"]["vocab"] == tok_b["model"]["vocab"]


def test_tokenizer_keeps_prompts_and_answers_short_and_digits_apart():
    from vlmrl_fast import prompts

    tok = train_tokenizer(corpus())
    state = {"Current": 2, "Target": 4}
    answer = prompts.answer("NumberLine-v0", state, "+")
    pieces = tok.convert_ids_to_tokens(tok(answer, add_special_tokens=False)["input_ids"])
    assert len(pieces) <= 16
    assert pieces.count("2") == 2 and pieces.count("4") == 2  # each digit is a token of its own
    assert '"action"' in pieces  # the action key starts a token: a clean CoT/action boundary
    assert tok.decode(tok(answer, add_special_tokens=False)["input_ids"]) == answer
    prompt_ids = tok(prompts.render("NumberLine-v0", state), add_special_tokens=False)["input_ids"]
    assert len(prompt_ids) <= 8
    # ALFWorld-v0's prompts (households the corpus never played: another seed) stay short too: its names,
    # commands and observations are in the corpus (~500 tokens each without them).
    from vlmrl_fast.perception import perception_frames

    alf = perception_frames("ALFWorld-v0", 64, seed=77, play="expert")
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in alf.prompts]
    assert sum(lengths) / len(lengths) <= 100, lengths
    blackjack = perception_frames("Blackjack-v0", 16, seed=77)  # the card games keep their merges
    assert max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in blackjack.prompts) <= 40
    # Byte-level: text outside the corpus still round-trips (no unknown token).
    odd = "Ünïcode ✓ 24 = (8/(3-8/3))"
    ids = tok(odd, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == odd and tok.unk_token_id not in ids


def test_default_model_is_cached_and_keyed_by_version(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMRL_FAST_CACHE", str(tmp_path))
    path = default_model_path()
    assert path.parent == tmp_path and TINY_VERSION in path.name
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert default_model_path() == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    # no temporary leftovers (the build's lock file stays: removing it could race another process)
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == [path.name]
    model, processor = load_model("tiny", ModelSettings(lora=False))
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.vision_config.image_size >= 112


def test_unknown_path_is_a_one_line_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match="no-such-model") as info:
        load_model(str(missing))
    assert "\n" not in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*config.json"):
        load_model(str(tmp_path / "empty"))


def test_processor_without_chat_template_is_rejected(tiny_dirs, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dirs["llava"], bare)
    for f in bare.glob("chat_template*"):
        f.unlink()
    for name in ("processor_config.json", "tokenizer_config.json"):
        p = bare / name
        if p.exists():
            cfg = json.loads(p.read_text())
            cfg.pop("chat_template", None)
            p.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"bare.*chat template") as info:
        load_model(str(bare), ModelSettings(lora=False))
    assert "\n" not in str(info.value)


def test_settings_validation_names_the_field():
    with pytest.raises(ValueError, match="ModelSettings.dtype"):
        ModelSettings(dtype="fp8")
    with pytest.raises(ValueError, match="ModelSettings.quantization"):
        ModelSettings(quantization="2bit")
    with pytest.raises(ValueError, match="ModelSettings.lora_r"):
        ModelSettings(lora_r=0)
    with pytest.raises(ValueError, match="ModelSettings.lora_target_modules"):
        ModelSettings(lora_target_modules=[])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_quantization_and_fp16_need_a_gpu(tiny_dirs):
    with pytest.raises(ValueError, match="quantization='4bit' needs a CUDA GPU"):
        load_model(tiny_dirs["llava"], ModelSettings(quantization="4bit", device="cpu"))
    with pytest.raises(ValueError, match="float16"):
        load_model(tiny_dirs["llava"], ModelSettings(dtype="float16", lora=False))


def test_bfloat16_weights_and_float32_value_head(tiny_dirs):
    model, _ = load_model(tiny_dirs["llava"], ModelSettings(dtype="bfloat16", lora=False))
    assert next(model.parameters()).dtype == torch.bfloat16
    head = ValueHead(model.config.get_text_config().hidden_size)
    out = head(torch.randn(3, head.hidden_size, dtype=torch.bfloat16))
    assert out.shape == (3,) and out.dtype == torch.float32
    widths = [m.out_features for m in head.net if isinstance(m, torch.nn.Linear)]
    assert widths == [1024, 512, 1]


def test_value_head_follows_its_weights_dtype():
    """FSDP's and DeepSpeed's bf16 compute cast the head's weights, not its input: a float32 hidden
    state meets bf16 weights (the first FSDP run on a GPU failed there). The head computes in its
    weights' dtype and still returns float32."""
    torch.manual_seed(0)
    head = ValueHead(16)
    hidden = torch.randn(4, 16)
    ref = head(hidden)
    assert ref.dtype == torch.float32
    head = head.to(torch.bfloat16)
    out = head(hidden)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, head.net(hidden.to(torch.bfloat16)).squeeze(-1).float())
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_lora_trains_only_adapters_of_the_language_model(tiny_dirs, family):
    model, _ = load_model(tiny_dirs[family], ModelSettings(lora=True, lora_r=4, lora_alpha=8))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("vision" in n or "visual" in n or "projector" in n for n in trainable)
    model_v, _ = load_model(tiny_dirs[family], ModelSettings(lora=True, lora_r=4, lora_vision=True))
    trainable_v = [n for n, p in model_v.named_parameters() if p.requires_grad]
    assert any("vision" in n or "visual" in n for n in trainable_v)
    assert len(trainable_v) > len(trainable)


def test_lora_target_list_and_unmatched_target(tiny_dirs):
    model, _ = load_model(tiny_dirs["llava"], ModelSettings(lora_r=4, lora_target_modules=["q_proj", "v_proj"]))
    names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"q_proj", "v_proj"}
    with pytest.raises(ValueError, match="lora_target_modules"):
        load_model(tiny_dirs["llava"], ModelSettings(lora_r=4, lora_target_modules=["no_such_proj"]))


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dirs):
    grads = []
    for gc in (False, True):
        torch.manual_seed(0)
        model, proc = load_model(tiny_dirs["llava"], ModelSettings(lora_r=4, lora_dropout=0.0,
                                                                   gradient_checkpointing=gc))
        model.train()
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules()) == gc
        ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_image_backend_is_pillow_by_default_whatever_is_installed(tiny_dirs, family):
    """transformers picks the torchvision backend when torchvision is installed (the test set has it, the
    runtime set does not), and the two give different pixels: a run must not depend on what is installed."""
    pytest.importorskip("torchvision")
    from vlmrl_fast import make_vec
    from vlmrl_fast.models.loading import load_processor

    _, default = load_model(tiny_dirs[family], ModelSettings(lora=False))
    auto = load_processor(tiny_dirs[family], image_backend="auto")
    assert type(default.image_processor).__name__.endswith("Pil")
    assert not type(auto.image_processor).__name__.endswith("Pil")
    envs = make_vec("NumberLine-v0", 2, seed=0)
    obs, _ = envs.reset(seed=0)
    envs.close()
    images = list(np.asarray(obs))
    pil = default.image_processor(images=images, return_tensors="pt")["pixel_values"]
    tv = auto.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert pil.shape == tv.shape and not torch.equal(pil, tv)


def test_image_backend_errors_name_the_choice(tiny_dirs, monkeypatch):
    from vlmrl_fast.models.loading import load_processor

    with pytest.raises(ValueError, match="ModelSettings.image_backend"):
        ModelSettings(image_backend="cv2")
    with pytest.raises(ValueError, match="image_backend: 'cv2'"):
        load_processor(tiny_dirs["llava"], image_backend="cv2")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else real(name, *a))
    with pytest.raises(ValueError, match="torchvision is not installed"):
        load_processor(tiny_dirs["llava"], image_backend="torchvision")
