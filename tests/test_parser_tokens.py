"""The CoT/action token split (first_action_token) with real tokenizers.

Three tokenizers of two families are trained offline in the test with the
`tokenizers` library: a byte-level BPE (GPT-2/Llama-3/Qwen style) and
SentencePiece-style Metaspace tokenizers (Unigram and BPE, Llama-2/Mistral
style). For every answer the first action token must cover the start of the
action key, every earlier token must end at or before it, and the token's
decoded text must contain the key's first character.
"""

from __future__ import annotations

import random
import unicodedata

import numpy as np
import pytest
from tokenizers import implementations as impl
from tokenizers.processors import TemplateProcessing

from test_parser_table import VOCABS, table, unmark
from vlmrl_fast import first_action_token, parse_actions, prompts

def nfkc(s: str) -> str:
    return unicodedata.normalize("NFKC", s)


BOS, EOS = "[BOS]", "[EOS]"  # not "<s>": the answers contain "</s>" as text


def corpus() -> list[str]:
    rng = random.Random(0)
    out = []
    for _ in range(300):
        cur, tgt = rng.randrange(6), rng.randrange(6)
        out.append(prompts.answer("NumberLine-v0", {"Current": cur, "Target": tgt}, rng.choice("-+")))
        cards = [rng.choice("SHDC") + rng.choice("A23456789TJQK") for _ in range(4)]
        info = {"Cards": cards, "Numbers": [1, 2, 3, 4], "Formula": [rng.randrange(1, 11), "+"]}
        out.append(prompts.answer("Points24-v0", info, rng.choice(["1", "10", "+", "(", "="])))
        bj = {"Player Card": cards[:2], "Dealer Card": cards[2:3]}
        out.append(prompts.answer("Blackjack-v0", bj, rng.choice(["hit", "stand"])))
    out += [unmark(r)[0] for v in VOCABS for r, _ in table(v)]
    return out


def _train(kind: str):
    texts = corpus()
    if kind == "byte_bpe":
        tok = impl.ByteLevelBPETokenizer()
        tok.train_from_iterator(texts, vocab_size=600, min_frequency=2, show_progress=False, special_tokens=[BOS, EOS])
    elif kind == "metaspace_unigram":
        tok = impl.SentencePieceUnigramTokenizer()
        tok.train_from_iterator(
            texts, vocab_size=400, show_progress=False, special_tokens=["<unk>", BOS, EOS], unk_token="<unk>"
        )
    else:
        tok = impl.SentencePieceBPETokenizer()
        tok.train_from_iterator(
            texts, vocab_size=500, min_frequency=2, show_progress=False, special_tokens=["<unk>", BOS, EOS]
        )
    # Wrap each answer in BOS/EOS: special tokens have (0, 0) offsets, which
    # first_action_token must never pick.
    tok.post_processor = TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, tok.token_to_id(BOS)), (EOS, tok.token_to_id(EOS))]
    )
    return tok


TOKENIZERS = ["byte_bpe", "metaspace_unigram", "metaspace_bpe"]


@pytest.fixture(scope="module", params=TOKENIZERS)
def tokenizer(request):
    return _train(request.param)


def answers() -> list[str]:
    """Answers with an action key: the tables' rows and prompt answers with
    Unicode thoughts (multi-byte characters before the key)."""
    rows = [unmark(r)[0] for v in VOCABS for r, _ in table(v)]
    info = {"Player Card": ["HA", "S9"], "Dealer Card": ["DK"]}
    rows += [prompts.answer("Blackjack-v0", info, "hit", thoughts=t) for t in ["Ünïcödé 😀 白", "action: stand?", ""]]
    return rows


def test_split_covers_key_start(tokenizer) -> None:
    texts = answers()
    parsed = parse_actions(texts, ["stand", "hit"])  # only key_start matters here
    checked = 0
    for text, k in zip(texts, parsed.key_start.tolist()):
        enc = tokenizer.encode(text)
        offsets = np.asarray(enc.offsets)
        i = first_action_token(enc.offsets, k)
        if k < 0:
            assert i == len(offsets)
            continue
        checked += 1
        start, end = offsets[i]
        assert start <= k < end, (text, k, offsets[i])
        assert (offsets[:i, 1] <= k).all()
        piece = tokenizer.decode([enc.ids[i]], skip_special_tokens=False)
        if not piece.strip() and i + 1 < len(offsets) and offsets[i + 1, 0] == start:
            # Metaspace's virtual prefix space "▁" at the text start gets the
            # span of the first character, overlapping the next token; it
            # stands before the key, so the split there is right too.
            piece = tokenizer.decode([enc.ids[i + 1]], skip_special_tokens=False)
        assert text[k] in piece, (text, k, piece)
        # The action part decodes back to the text from the key on.
        tail = tokenizer.decode(enc.ids[i:], skip_special_tokens=True)
        # The SentencePiece-style tokenizers apply NFKC and rewrite whitespace.
        assert "".join(nfkc(text[k:]).split()) in "".join(nfkc(tail).split())
    assert checked > 250


def test_split_with_transformers_fast_tokenizer() -> None:
    """What the trainer does: a transformers fast tokenizer's batched offset
    mapping, with special tokens, split at the parser's key_start."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=_train("byte_bpe")._tokenizer, bos_token=BOS, eos_token=EOS)
    texts = [unmark(r)[0] for r, name in table("blackjack") if name is not None]
    parsed = parse_actions(texts, ["stand", "hit"])
    enc = hf(texts, return_offsets_mapping=True)
    for text, k, ids, offs in zip(texts, parsed.key_start.tolist(), enc["input_ids"], enc["offset_mapping"]):
        assert k >= 0
        i = first_action_token(offs, k)
        assert ids[0] == hf.bos_token_id and i > 0
        assert text[k] in hf.decode(ids[i : i + 1])
        assert hf.decode(ids[i:], skip_special_tokens=True).endswith(text[-3:])


def test_first_action_token_edges() -> None:
    assert first_action_token([], 3) == 0
    assert first_action_token([(0, 2), (2, 5)], -1) == 2
    assert first_action_token([(0, 0), (0, 2), (2, 5), (0, 0)], 2) == 2
    assert first_action_token(np.array([[0, 2], [2, 5]]), 4) == 1
    assert first_action_token([(0, 2), (2, 5)], 9) == 2  # cut before the key
