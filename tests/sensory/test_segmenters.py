"""Topic segmenters on a constructed two-topic conversation with the real MiniLM embedder."""

from __future__ import annotations

from typing import Any

import pytest

from lightmem_core.models import Message
from lightmem_core.sensory.compressors.llmlingua2 import LLMLingua2Compressor
from lightmem_core.sensory.segmenters.embedding import EmbeddingSegmenter, turn_starts, turn_texts
from lightmem_core.sensory.segmenters.llmlingua2 import LLMLingua2Segmenter
from tests.sensory.conftest import CAR_REPAIR, COOKING, as_messages, conversation

LAYERS = [3, 4, 5]  # MiniLM has 6 layers; LightMem's 8-11 are for the 12-layer LLMLingua-2 model


def turn_of(messages: list[Message], index: int) -> int:
    return sum(1 for i in turn_starts(messages) if i <= index) - 1


@pytest.mark.parametrize("turns,truth", [(conversation(), 10), (CAR_REPAIR + COOKING, 10), (COOKING[:4] + CAR_REPAIR, 4)])
def test_embedding_segmenter_finds_the_topic_change(minilm_embedder: Any, turns: list[Any], truth: int) -> None:
    messages = as_messages(turns)
    found = EmbeddingSegmenter(minilm_embedder).boundaries(messages)
    assert len(found) == 1, found
    assert abs(turn_of(messages, found[0]) - truth) <= 1
    assert messages[found[0]].role == "user"  # cuts at a turn start


def test_llmlingua2_segmenter_finds_the_topic_change(minilm_embedder: Any, attention_scorer: Any) -> None:
    messages = as_messages(conversation())
    segmenter = LLMLingua2Segmenter(attention_scorer, EmbeddingSegmenter(minilm_embedder), LAYERS)
    found = segmenter.boundaries(messages)
    assert found and all(abs(turn_of(messages, b) - 10) <= 1 for b in found), found
    assert segmenter.model_passes == 1


def test_shared_mode_reuses_the_compressors_forward_pass(minilm_embedder: Any, attention_scorer: Any) -> None:
    messages = as_messages(conversation(), session_id="shared")
    users = [m for m in messages if m.role == "user"]
    calls: list[int] = []
    hook = attention_scorer.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        compressor = LLMLingua2Compressor(attention_scorer, rate=0.5, shared_layers=LAYERS)
        compressed = compressor.compress([m.content for m in users], ["u1/shared"] * len(users))
        segmenter = LLMLingua2Segmenter(attention_scorer, EmbeddingSegmenter(minilm_embedder), LAYERS, shared=True)
        found = segmenter.boundaries(messages)
    finally:
        hook.remove()
    assert len(calls) == 1  # one forward pass compressed all turns and gave the attention
    assert segmenter.model_passes == 0
    assert all(r.tokens_after < r.tokens_before for r in compressed)
    assert found and all(abs(turn_of(messages, b) - 10) <= 1 for b in found), found


def test_shared_mode_reads_a_session_that_spans_several_windows_without_a_pass_of_its_own(
        minilm_embedder: Any, lingua_path: str) -> None:
    """Where the compressor's windows end inside a session, its pass has no attention between the two
    texts; a pass of the segmenter's own would end its windows at the same places. Before, one such gap
    made the segmenter run the model over the whole session again (half the CPU of LightMem's recipe)."""
    from lightmem_core.sensory.compressors.lingua_scorer import LinguaScorer

    scorer = LinguaScorer(lingua_path, device="cpu", attention=True)
    scorer.body = 48  # a few turns per window, as a long session fills the model's 512 tokens
    messages = as_messages(conversation(), session_id="long")
    users = [m.content for m in messages if m.role == "user"]
    LLMLingua2Compressor(scorer, rate=0.5, shared_layers=LAYERS).compress(users, ["u1/long"] * len(users))
    segmenter = LLMLingua2Segmenter(scorer, EmbeddingSegmenter(minilm_embedder), LAYERS, shared=True)
    found = segmenter.boundaries(messages)
    assert segmenter.model_passes == 0
    recalled = scorer.recall(users)
    _, fresh = scorer.score_packed(users, [""] * len(users), LAYERS)  # what a pass of its own gives
    assert recalled is not None and sum(v is None for v in fresh) > 1  # the windows did split the session
    assert [v is None for v in recalled] == [v is None for v in fresh]
    assert [v for v in recalled if v is not None] == pytest.approx([v for v in fresh if v is not None], abs=1e-5)
    assert found and all(abs(turn_of(messages, b) - 10) <= 1 for b in found), found
    assert scorer.recall([users[0], "never scored next to it"]) is None  # unseen neighbours: a pass is needed


def test_a_turn_cut_again_is_not_embedded_again(minilm_embedder: Any) -> None:
    """The sensory buffer keeps the last topic after a cut and cuts it again with the next messages: its
    turns are embedded once, and the boundaries are those of a segmenter that embeds everything afresh."""
    messages = as_messages(conversation())
    segmenter = EmbeddingSegmenter(minilm_embedder)
    segmenter.boundaries(messages[:14])  # the first seven turns
    found = segmenter.boundaries(messages)  # the buffer again, with thirteen more turns
    assert segmenter.embedded == len(turn_starts(messages)) == 20
    assert found == EmbeddingSegmenter(minilm_embedder).boundaries(messages)


def test_priming_embeds_the_turns_of_several_sessions_in_one_call(minilm_embedder: Any) -> None:
    """What the compress worker does with a task's sessions: one embedding call for all their turns, then
    each session is cut without embedding anything, into the boundaries an unprimed segmenter finds."""
    calls: list[int] = []

    class Counting:
        def embed(self, texts: list[str]) -> list[list[float]]:
            calls.append(len(texts))
            return minilm_embedder.embed(texts)  # type: ignore[no-any-return]

    sessions = [as_messages(turns, session_id=f"s{k}")
                for k, turns in enumerate([conversation(), CAR_REPAIR + COOKING, COOKING[:4] + CAR_REPAIR])]
    segmenter = LLMLingua2Segmenter(None, EmbeddingSegmenter(Counting()), LAYERS)  # type: ignore[arg-type]
    segmenter.prime(sessions)
    assert calls == [len({t for s in sessions for t in turn_texts(s, turn_starts(s))})]  # each text once
    found = [segmenter.fine.fine(s)[1] for s in sessions]
    assert len(calls) == 1  # nothing embedded again
    assert found == [EmbeddingSegmenter(minilm_embedder).fine(s)[1] for s in sessions]


def test_turns_do_not_assume_alternation() -> None:
    roles = ["system", "user", "user", "assistant", "tool", "assistant", "user"]
    messages = [
        Message(id=f"m{i}", user_id="u", session_id="s", turn_index=i, role=r, content=f"text {i}",
                time_stamp="2025-01-10T10:00:00Z")
        for i, r in enumerate(roles)
    ]
    assert turn_starts(messages) == [0, 1, 2, 6]
    assert turn_starts([m for m in messages if m.role != "user"]) == [0, 1, 2, 3]  # no user: each message a turn


def test_fewer_than_two_turns_gives_no_boundary(minilm_embedder: Any) -> None:
    messages = as_messages(COOKING[:1])
    assert EmbeddingSegmenter(minilm_embedder).boundaries(messages) == []


def test_packed_scoring_needs_a_scorer_loaded_with_attention(scorer: Any) -> None:
    from lightmem_core.errors import ConfigError

    with pytest.raises(ConfigError, match="attention=True"):
        scorer.score_packed(["a", "b"], ["g", "g"], LAYERS)
