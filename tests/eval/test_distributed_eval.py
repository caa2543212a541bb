"""``--distributed``: the default system ingested through Redis and real worker processes scores
exactly as the same system ingested in process (the queues store the same entries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lightmem_core.config import BaseMemoryConfigs
from producers.datasets import Conversation
from producers.eval.runner import EvalOptions, run_eval
from producers.eval.systems import build_specs
from workers.settings import DEFAULT_CONFIG


@pytest.mark.integration
def test_distributed_ingest_scores_like_in_process(locomo_slice: Conversation, eval_config: BaseMemoryConfigs,
                                                   minilm_embedder: Any, tmp_path: Path) -> None:
    specs = build_specs(eval_config, ("default",))
    local = EvalOptions(ks=(1, 5, 10), progress=False)
    queued = EvalOptions(ks=(1, 5, 10), progress=False, distributed_config=str(DEFAULT_CONFIG))
    (in_process,) = run_eval([locomo_slice], specs, tmp_path / "local", minilm_embedder, local)
    (through_queues,) = run_eval([locomo_slice], specs, tmp_path / "queued", minilm_embedder, queued)
    assert "queue pipeline" in through_queues.description
    assert through_queues.stats["entries_stored"] == in_process.stats["entries_stored"] > 20
    assert len(through_queues.rows) == len(in_process.rows) > 5
    assert through_queues.rows == in_process.rows  # same entries, same retrieval, same scores
    assert through_queues.ingest_s > 0
