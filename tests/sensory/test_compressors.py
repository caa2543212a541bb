"""Compressors: kept share, forced tokens, order, batching, chunking, odd input, bad models and rates."""

from __future__ import annotations

import re
from typing import Any

import pytest

from lightmem_core.config import parse_config
from lightmem_core.errors import ConfigError, ModelLoadError
from lightmem_core.sensory.compressors.batching import CPU_BATCH_TOKENS, MIN_FILL, length_batches
from lightmem_core.sensory.compressors.lingua_scorer import LinguaScorer, chunk_spans
from lightmem_core.sensory.compressors.llmlingua2 import LLMLingua2Compressor, compress_batch
from lightmem_core.sensory.compressors.selection import check_rate
from tests.sensory.conftest import CAR_REPAIR, COOKING

KINDS = ["llmlingua-2", "entropy", "wordfreq"]
# Plain words only, so forced punctuation does not count against the budget.
PLAIN = " ".join(re.sub(r"[^\w\s]", "", u + " " + a) for u, a in COOKING[:6])
VARIED = [u for u, _ in COOKING + CAR_REPAIR] + ["", "   ", "Ok.", "A much longer message. " * 30]


def words_of(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def is_subsequence(short: list[str], full: list[str]) -> bool:
    it = iter(full)
    return all(any(w == x for x in it) for w in short)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rate", [0.3, 0.5, 0.8])
def test_kept_share_is_within_five_points_of_rate(compressors: dict[str, Any], kind: str, rate: float) -> None:
    compressor = compressors[kind]
    before = compressor.rate
    compressor.rate = rate
    try:
        short = compressor.compress([PLAIN])[0].text
    finally:
        compressor.rate = before
    share = len(words_of(short)) / len(words_of(PLAIN))
    assert abs(share - rate) <= 0.05, (kind, rate, share)


@pytest.mark.parametrize("kind", KINDS)
def test_forced_tokens_survive_and_order_is_kept(compressors: dict[str, Any], kind: str) -> None:
    text = ("Well, the car broke down again! Why now? I called the garage.\nThey said Monday, maybe Tuesday.\n\n"
            "So I waited at home\nfor a very long time\nand then took the bus.")
    result = compressors[kind].compress([text])[0]
    for mark in [".", ",", "!", "?", "\n"]:
        assert result.text.count(mark) == text.count(mark), (kind, mark, result.text)
    assert is_subsequence(words_of(result.text), words_of(text))
    assert result.tokens_after < result.tokens_before


@pytest.mark.parametrize("kind", ["llmlingua-2", "entropy"])
def test_batched_equals_one_by_one(compressors: dict[str, Any], kind: str) -> None:
    compressor = compressors[kind]
    batched = compressor.compress(VARIED)
    alone = [compressor.compress([t])[0] for t in VARIED]
    assert batched == alone


@pytest.mark.parametrize(("batch_size", "cap"), [(1, None), (4, None), (32, 100), (8, 7), (3, 1000)])
def test_length_batches_respect_both_caps_and_cover_every_item(batch_size: int, cap: int | None) -> None:
    import random

    lengths = [random.Random(seed).randint(1, 60) for seed in range(97)]
    batches = length_batches(lengths, batch_size, cap)
    assert sorted(k for b in batches for k in b) == list(range(len(lengths)))
    flat = [lengths[k] for b in batches for k in b]
    assert flat == sorted(lengths, reverse=True)  # longest first: little padding
    for b in batches:
        assert 1 <= len(b) <= batch_size
        if cap is not None and len(b) > 1:
            assert len(b) * max(lengths[k] for k in b) <= cap
            assert min(lengths[k] for k in b) >= MIN_FILL * max(lengths[k] for k in b)  # little padding
    if cap is None:
        assert len(batches) == -(-len(lengths) // batch_size)


def test_a_short_item_is_not_padded_to_a_long_batch_under_a_cap() -> None:
    assert length_batches([512, 90, 500, 60], 32, 1024) == [[0, 2], [1, 3]]
    assert length_batches([512, 90, 500, 60], 32, None) == [[0, 2, 1, 3]]  # a GPU wants one large batch


def test_length_batches_refuse_nonsense_sizes() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        length_batches([3], 0, None)
    with pytest.raises(ValueError, match="max_tokens"):
        length_batches([3], 4, 0)


def test_token_cap_changes_the_batches_not_the_output(scorer: LinguaScorer) -> None:
    assert scorer.max_batch_tokens == CPU_BATCH_TOKENS  # the CPU default
    calls: list[tuple[int, int]] = []
    hook = scorer.model.register_forward_hook(lambda _m, _a, kw, _o: calls.append(tuple(kw["input_ids"].shape)),
                                              with_kwargs=True)
    try:
        wide = compress_batch(scorer, VARIED, [0.5] * len(VARIED))
        wide_calls, calls[:] = list(calls), []
        scorer.max_batch_tokens = 64
        narrow = compress_batch(scorer, VARIED, [0.5] * len(VARIED))
    finally:
        scorer.max_batch_tokens = CPU_BATCH_TOKENS
        hook.remove()
    assert narrow == wide
    assert len(calls) > len(wide_calls)
    assert all(rows * width <= 64 for rows, width in calls if rows > 1)


def test_max_batch_tokens_below_one_is_refused(lingua_path: str, memory_config: Any) -> None:
    cfg = memory_config(pre_compress=True, pre_compressor={"model_name": "llmlingua-2", "configs": {
        "llmlingua_config": {"model_name": lingua_path}, "compress_config": {"max_batch_tokens": 0}}})
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        parse_config(cfg)


def test_each_message_gets_its_own_rate_in_one_batch(scorer: LinguaScorer) -> None:
    texts = [PLAIN, PLAIN, PLAIN]
    low, mid, high = compress_batch(scorer, texts, [0.2, 0.5, 0.9])
    counts = [len(words_of(r.text)) for r in (low, mid, high)]
    assert counts[0] < counts[1] < counts[2]


def test_long_input_is_chunked_at_the_model_maximum(scorer: LinguaScorer) -> None:
    text = " ".join(f"{u} {a}" for u, a in COOKING + CAR_REPAIR) * 3  # about 1,500 model tokens
    encoded = scorer.encode([text])[0]
    spans = chunk_spans(encoded.word_ids, scorer.body)
    assert len(spans) >= 3 and max(b - a for a, b in spans) <= scorer.body
    shapes: list[tuple[int, int]] = []
    hook = scorer.model.register_forward_pre_hook(
        lambda _m, _a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        result = LLMLingua2Compressor(scorer, rate=0.5).compress([text])[0]
    finally:
        hook.remove()
    assert sum(rows for rows, _ in shapes) == len(spans)  # every chunk went through the model
    assert max(width for _, width in shapes) <= 512
    kept = words_of(result.text)
    assert abs(len(kept) / len(words_of(text)) - 0.5) <= 0.05
    assert is_subsequence(kept, words_of(text))


ODD = {
    "empty": "",
    "whitespace": " \n\t  ",
    "emoji": "😀🚗🍝🔥👍🏽",
    "cjk": "我今天做了番茄意大利面，味道很好。明日は車を修理します。",
    "rtl": "שלום, המכונית שלי מקולקלת. مرحبا، سيارتي معطلة اليوم.",
}


@pytest.mark.parametrize("kind", KINDS)
def test_odd_inputs_do_not_crash(compressors: dict[str, Any], kind: str) -> None:
    results = compressors[kind].compress(list(ODD.values()))
    assert len(results) == len(ODD)
    for (name, text), r in zip(ODD.items(), results, strict=True):
        assert isinstance(r.text, str) and r.tokens_after <= r.tokens_before, name
        if not text.strip():
            assert r.text == text
        else:
            assert r.text.strip(), name


@pytest.mark.parametrize("kind", KINDS)
def test_one_megabyte_message(compressors: dict[str, Any], kind: str) -> None:
    big = ("The mechanic replaced the brake pads and checked the oil. " * 18_100)[: 1 << 20]
    result = compressors[kind].compress([big, "short one"])[0]
    assert len(big) == 1 << 20 and result.tokens_before > 150_000
    if kind == "wordfreq":  # model-free: really compressed
        assert result.tokens_after < result.tokens_before
    else:  # over max_text_tokens: passed through unchanged rather than minutes of CPU
        assert result.text == big


def test_model_without_token_classification_head_fails_at_load(minilm_path: str) -> None:
    with pytest.raises(ModelLoadError, match="no token-classification head"):
        LinguaScorer(minilm_path, device="cpu")


def test_mismatched_tokenizer_fails_at_load(tmp_path: Any, minilm_path: str) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    small = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    small.num_labels = 2
    BertForTokenClassification(small).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="do not match"):
        LinguaScorer(str(tmp_path), device="cpu")


def test_missing_path_fails_at_load(tmp_path: Any) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        LinguaScorer(str(tmp_path / "nowhere"), device="cpu")


@pytest.mark.parametrize("rate", [0, -0.1, 1.01, 2, float("nan")])
def test_rate_outside_zero_one_is_refused(rate: float, lingua_path: str, memory_config: Any) -> None:
    with pytest.raises(ConfigError):
        check_rate(rate)
    with pytest.raises(ConfigError, match="rate"):
        parse_config(memory_config(pre_compress=True, pre_compressor={
            "model_name": "llmlingua-2",
            "configs": {"llmlingua_config": {"model_name": lingua_path}, "compress_config": {"rate": rate}},
        }))


def test_rate_of_one_keeps_everything(compressors: dict[str, Any]) -> None:
    text = "Keep every single word of this sentence, please."
    for kind in KINDS:
        compressor = compressors[kind]
        before, compressor.rate = compressor.rate, 1.0
        try:
            assert compressor.compress([text])[0].text == text
        finally:
            compressor.rate = before


def test_unusable_device_fails_at_load(lingua_path: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ModelLoadError, match="device 'cuda'"):
        LinguaScorer(lingua_path, device="cuda")


def test_wordfreq_keeps_negations_so_no_fact_is_reversed() -> None:
    from lightmem_core.sensory.compressors.wordfreq_entropy import WordfreqEntropyCompressor

    compressor = WordfreqEntropyCompressor(rate=0.5)
    texts = ["I'm allergic to peanuts, so please never suggest satay recipes.", "I don't eat meat and I am not vegan."]
    short = [r.text for r in compressor.compress(texts)]
    assert "never" in short[0] and "satay" in short[0]
    assert "don't" in short[1] and "not" in short[1]


def test_wordfreq_protection_keeps_names_numbers_and_dates() -> None:
    import re

    from lightmem_core.sensory.compressors.wordfreq_entropy import WordfreqEntropyCompressor, is_protected

    text = "Hey Mel! I went to the beach with my 2 kids last Sunday in May."
    plain, kept = (set(re.findall(r"\w+", WordfreqEntropyCompressor(rate=0.55, protect=p).compress([text])[0].text))
                   for p in (False, True))
    assert not {"2", "May"} & plain  # wordfreq finds them common: surprisal alone drops them
    assert {"Mel", "2", "Sunday", "May"} <= kept
    assert not is_protected(text, 0, "Hey") and not is_protected(text, 10, "I")  # a sentence's first word, "I"
    assert len(kept) == len(plain)  # the same share of words is kept: protection chooses, it does not add


def test_wordfreq_keeps_or_drops_a_hyphenated_compound_whole() -> None:
    from lightmem_core.sensory.compressors.wordfreq_entropy import WordfreqEntropyCompressor

    text = "My secret jam is quokka-marmalade-7731, keep it safe with the well-known recipe."
    for rate in (0.3, 0.45, 0.6):
        short = WordfreqEntropyCompressor(rate=rate, protect=True).compress([text])[0].text
        assert "quokka-marmalade-7731" in short  # a number inside: protected, and never cut in pieces
        assert "- " not in short and " -" not in short
        assert ("well-known" in short) or ("well" not in short.split() and "known" not in short.split())
