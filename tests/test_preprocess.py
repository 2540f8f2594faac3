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
SHAPES = [(6, 300, 300), (1, 1, 1), (2, 7, 300), (2, 301, 299)]


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


def _llava_next():
    from transformers import LlavaNextImageProcessor

    from preprocess_cases import CLIP_336

    return LlavaNextImageProcessor(
        **CLIP_336, image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    )


def test_unsupported_processor_falls_back_once():
    ip = _llava_next()
    with pytest.warns(UserWarning, match="falling back to the Hugging Face processor"):
        pipeline = ImagePipeline.from_processor(ip)
    assert not pipeline.native
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the notice is given once per processor class
        pipeline = ImagePipeline.from_processor(_llava_next(), dtype=torch.float16)
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
