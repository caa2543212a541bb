"""Fixtures of the evaluation tests: the real datasets (loaded once) and small slices of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightmem_core.config import BaseMemoryConfigs
from producers.datasets import Conversation, load_locomo, load_longmemeval
from workers.settings import DEFAULT_CONFIG, Settings, memory_config


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """As ``lightmem eval`` does: on this shared 2-core machine spinning torch threads slow queries 10-20x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def locomo(data_dir: Path) -> list[Conversation]:
    return load_locomo(data_dir / "locomo10.json")


@pytest.fixture(scope="session")
def longmemeval(data_dir: Path) -> list[Conversation]:
    return load_longmemeval(data_dir / "longmemeval_s_sample.json")


def slice_conversation(conv: Conversation, sessions: int) -> Conversation:
    """The first ``sessions`` sessions and the questions whose evidence lies entirely in them."""
    kept = conv.sessions[:sessions]
    ids = {m["id"] for s in kept for m in s.messages}
    questions = [q for q in conv.questions if q.evidence_ids and set(q.evidence_ids) <= ids]
    return dataclasses.replace(conv, sessions=kept, questions=questions)


@pytest.fixture(scope="session")
def locomo_slice(locomo: list[Conversation]) -> Conversation:
    """conv-26, first three sessions (about 60 turns) and their questions."""
    return slice_conversation(locomo[0], 3)


@pytest.fixture
def eval_config() -> BaseMemoryConfigs:
    """The embedded default configuration, as the file says at run time."""
    return memory_config(Settings(config_file=DEFAULT_CONFIG))
