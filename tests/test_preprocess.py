"""The native image pipeline against the Hugging Face processors it replaces."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from preprocess_cases import PROCESSORS, hf_outputs, synthetic_obs
from vlmrl_fast.preprocess import (
    ImagePipeline,
    PreprocessError,
    PreprocessTypeError,
)

TOLERANCE = 0.02  # max abs difference after normalization (the bound)
# (2, 500, 200): tall, so Pillow >= 13 resamples fixed sizes vertically first.
SHAPES = [(6, 300, 300), (1, 1, 1), (2, 7, 300), (2, 301, 299), (2, 500, 200)]


@pytest.fixture(scope="module", params=sorted(PROCESSORS))
def case(request):
    ip = PROCESSORS[request.param]()
    return request.param, ip, ImagePipeline.from_processor(ip)


def assert_matches(ref, got) -> None:
    assert set(got.keys()) == set(ref.keys())
    rv, gv = ref["pixel_values"], got["pixel_values"]
    assert isinstance(gv, torch.Tensor) and gv.dtype == torch.float32
    assert gv.shape == rv.shape
    diff = (rv - gv).abs()
    assert diff.max().item() <= TOLERANCE, f"max abs diff {diff.max().item():.4f}"
    # A systematic error (wrong mean, shifted crop) moves many values a little.
    assert diff.mean().item() < 1e-3, f"mean abs diff {diff.mean().item():.5f}"
    if "image_grid_thw" in ref:
        assert got["image_grid_thw"].dtype == torch.long
        assert torch.equal(got["image_grid_thw"], ref["image_grid_thw"])
    if "image_sizes" in ref:
        assert got["image_sizes"].dtype == ref["image_sizes"].dtype
        assert torch.equal(got["image_sizes"], ref["image_sizes"])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_equal_to_hugging_face(case, shape):
    name, ip, pipeline = case
    assert pipeline.native, name
    obs = synthetic_obs(*shape, seed=sum(shape))
    assert_matches(hf_outputs(ip, obs), pipeline(obs))


def test_qwen_grid_and_patch_rows():
    ip = PROCESSORS["qwen2vl_tv"]()
    out = ImagePipeline.from_processor(ip)(synthetic_obs(3, 300, 300))
    # 300 -> 308 = 22 patches of 14 per side; rows of 3 x 2 x 14 x 14.
    assert out["image_grid_thw"].tolist() == [[1, 22, 22]] * 3
    assert tuple(out["pixel_values"].shape) == (3 * 22 * 22, 1176)


def test_full_processor_and_dtype():
    from transformers import Qwen2VLProcessor, Qwen2VLVideoProcessor
    from transformers.tokenization_utils_tokenizers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    vocab = {"<unk>": 0, "<|image_pad|>": 1, "<|vision_start|>": 2, "<|vision_end|>": 3, "<|video_pad|>": 4}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")))
    ip = PROCESSORS["qwen2vl_pil"]()
    processor = Qwen2VLProcessor(image_processor=ip, tokenizer=tok, video_processor=Qwen2VLVideoProcessor())
    pipeline = ImagePipeline.from_processor(processor, dtype=torch.bfloat16)
    assert pipeline.native and pipeline.image_processor is ip
    obs = synthetic_obs(2, 300, 300)
    got, ref = pipeline(obs), hf_outputs(ip, obs)
    assert got["pixel_values"].dtype == torch.bfloat16
    torch.testing.assert_close(got["pixel_values"].float(), ref["pixel_values"], atol=TOLERANCE + 0.02, rtol=8e-3)


@pytest.mark.parametrize("name", ["clip336_pil", "qwen2vl_tv", "siglip224_pil"])
def test_bfloat16_is_written_natively_and_rounds_like_torch(name):
    """dtype=bfloat16 writes bf16 bits from Rust; they equal torch's float32 -> bfloat16
    conversion (round to nearest even) of the float32 pipeline's values, bit for bit."""
    ip = PROCESSORS[name]()
    f32 = ImagePipeline.from_processor(ip)
    bf16 = ImagePipeline.from_processor(ip, dtype=torch.bfloat16)
    obs = synthetic_obs(3, 301, 299, seed=4)
    want = f32(obs)["pixel_values"].to(torch.bfloat16)
    got = bf16(obs)["pixel_values"]
    assert got.dtype == torch.bfloat16
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    storage = torch.empty((2, *bf16.output_shape(3, 301, 299)), dtype=torch.bfloat16)
    into = bf16(obs, out=storage[1])["pixel_values"]
    assert into.data_ptr() == storage[1].data_ptr()
    assert torch.equal(storage[1].view(torch.int16), want.view(torch.int16))
    with pytest.raises(ValueError, match="out must be a contiguous torch.bfloat16 CPU tensor"):
        bf16(obs, out=torch.empty(bf16.output_shape(3, 301, 299)))
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'bfloat16'"):
        bf16.core(obs, dtype="float16")
    with pytest.raises(PreprocessTypeError, match="out must be a numpy uint16"):
        bf16.core(obs, np.zeros(3, np.float32), dtype="bfloat16")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_buffers_are_reused_only_once_freed(dtype):
    """New outputs come from a pool of freed ones (no page faults on fresh memory), and a
    buffer is never handed out again while any tensor, view or array over it is alive."""
    pipeline = ImagePipeline.from_processor(PROCESSORS["clip336_pil"](), dtype=dtype)
    a_obs, b_obs = synthetic_obs(2, 300, 300, seed=1), synthetic_obs(2, 300, 300, seed=2)
    a = pipeline(a_obs)["pixel_values"]
    a_copy = a.clone()
    b = pipeline(b_obs)["pixel_values"]
    assert a.data_ptr() != b.data_ptr()
    assert torch.equal(a, a_copy)  # computing b did not touch a
    view = a[1]
    ptr = a.data_ptr()
    del a
    c = pipeline(b_obs)["pixel_values"]
    assert c.data_ptr() != ptr and torch.equal(view, a_copy[1])  # the view keeps a's buffer
    del view
    d = pipeline(a_obs)["pixel_values"]
    assert d.data_ptr() == ptr and torch.equal(d, a_copy)  # freed: reused, fully rewritten
    arr = d.view(torch.int16).numpy() if dtype == torch.bfloat16 else d.numpy()
    del d
    e = pipeline(b_obs)["pixel_values"]
    assert e.data_ptr() != ptr and arr.ctypes.data == ptr  # a numpy view keeps it too
    assert torch.equal(e, b)
    assert all(t.data_ptr() % 64 == 0 for t in (b, c, e))  # values start on a cache line


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", ["clip336", "qwen2vl", "llavanext"])
def test_large_batches_equal_single_images(family, dtype):
    """A batch above STREAM_BYTES (32 MiB: written with streaming stores; Qwen2-VL's patch
    rows staged first) holds the values of its images preprocessed one at a time (plain stores)."""
    pipeline = ImagePipeline.from_processor(PROCESSORS[f"{family}_pil"](), dtype=dtype)
    obs = synthetic_obs(50, 300, 300, seed=3)
    batch = pipeline(obs)["pixel_values"]
    assert batch.numel() * batch.element_size() >= 32 << 20
    singles = torch.cat([pipeline(obs[i : i + 1])["pixel_values"] for i in range(len(obs))])
    assert torch.equal(batch, singles)


def test_reads_tensors_and_strided_arrays():
    ip = PROCESSORS["clip336_tv"]()
    pipeline = ImagePipeline.from_processor(ip)
    obs = synthetic_obs(2, 300, 300)
    flipped = obs[:, ::-1]  # not C-contiguous
    assert_matches(hf_outputs(ip, np.ascontiguousarray(flipped)), pipeline(flipped))
    assert torch.equal(pipeline(torch.from_numpy(obs))["pixel_values"], pipeline(obs)["pixel_values"])


def test_writes_into_preallocated_storage():
    ip = PROCESSORS["qwen2vl_pil"]()
    pipeline = ImagePipeline.from_processor(ip)
    obs = synthetic_obs(3, 300, 300)
    storage = torch.full((2, *pipeline.output_shape(3, 300, 300)), float("nan"))
    got = pipeline(obs, out=storage[1])
    assert got["pixel_values"].data_ptr() == storage[1].data_ptr()
    assert_matches(hf_outputs(ip, obs), got)
    assert torch.isnan(storage[0]).all()
    with pytest.raises(PreprocessError, match="out has shape"):
        pipeline(obs[:2], out=storage[1])


@pytest.mark.parametrize("name", ["clip336_pil", "qwen2vl_tv"])
def test_bad_input_is_named(name):
    pipeline = ImagePipeline.from_processor(PROCESSORS[name]())
    with pytest.raises(PreprocessTypeError, match="uint8"):
        pipeline(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="numpy uint8 array"):
        pipeline([[1, 2, 3]])
    with pytest.raises(PreprocessError, match="3 channels"):
        pipeline(np.zeros((2, 8, 8, 4), dtype=np.uint8))
    with pytest.raises(PreprocessError, match="4 dimensions"):
        pipeline(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(PreprocessError, match="empty batch"):
        pipeline(np.zeros((0, 8, 8, 3), dtype=np.uint8))
    assert issubclass(PreprocessError, ValueError) and issubclass(PreprocessTypeError, TypeError)


def test_qwen_rejects_extreme_aspect_ratio():
    pipeline = ImagePipeline.from_processor(PROCESSORS["qwen2vl_pil"]())
    with pytest.raises(PreprocessError, match="aspect ratio"):
        pipeline(np.zeros((1, 1, 300, 3), dtype=np.uint8))


def test_bad_dtype_option():
    with pytest.raises(TypeError, match="floating"):
        ImagePipeline.from_processor(PROCESSORS["clip336_tv"](), dtype=torch.int64)


def _llava_next_224_tiles():
    """LLaVA-NeXT whose 224 tiles are cut from a 336 base: a configuration the native
    tiling does not take (its tiles would be resized), so the processor is called."""
    from transformers import LlavaNextImageProcessor

    from preprocess_cases import LLAVA_NEXT

    return LlavaNextImageProcessor(**dict(LLAVA_NEXT, crop_size={"height": 224, "width": 224}))


def test_unsupported_processor_falls_back_once():
    ip = _llava_next_224_tiles()
    with pytest.warns(UserWarning, match="falling back to the Hugging Face processor"):
        pipeline = ImagePipeline.from_processor(ip)
    assert not pipeline.native
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the notice is given once per processor class
        pipeline = ImagePipeline.from_processor(_llava_next_224_tiles(), dtype=torch.float16)
    obs = synthetic_obs(2, 300, 300)
    got, ref = pipeline(obs), hf_outputs(ip, obs)
    assert "image_sizes" in got and torch.equal(got["image_sizes"], ref["image_sizes"])
    assert got["pixel_values"].dtype == torch.float16
    torch.testing.assert_close(got["pixel_values"], ref["pixel_values"].half())
    with pytest.raises(PreprocessError, match="empty batch"):
        pipeline(np.zeros((0, 8, 8, 3), dtype=np.uint8))


def test_processor_with_padding_falls_back():
    from preprocess_cases import CLIP_336
    from transformers import CLIPImageProcessorPil

    ip = CLIPImageProcessorPil(**CLIP_336, do_pad=True, pad_size={"height": 340, "width": 340})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = ImagePipeline.from_processor(ip)
    assert not pipeline.native
    obs = synthetic_obs(1, 300, 300)
    torch.testing.assert_close(pipeline(obs)["pixel_values"], hf_outputs(ip, obs)["pixel_values"])
