"""graph_mem through real worker processes: the extract workers get the graph from the extraction call,
the store worker writes it with the batch, and its search desk walks it for ``graph_hops``.

Its own cluster: without pre-compression, because the embedded default's compressor (rate 0.45) keeps
the names of "My sister is Bella." and drops the words that say how they relate ("Bella."), so neither
a model nor the scripted server could read a relation from what extraction is shown."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from producers.datasets import Conversation, DatasetSession
from tests.distributed.conftest import Cluster, running_cluster
from tests.distributed.test_drivers import Library, Queues
from tests.graph.test_graph_memory import FAMILY, QUESTION
from workers.launch import LocalCluster

pytestmark = pytest.mark.integration
M = "LIGHTMEM_MEMORY__"
GRAPH = {f"{M}GRAPH_MEM": "true", f"{M}PRE_COMPRESS": "false"}


@pytest.fixture(scope="module")
def graph_cluster(redis_cluster: LocalCluster) -> Iterator[Cluster]:
    with running_cluster(redis_cluster, "graph", GRAPH) as running:
        yield running


def test_graph_retrieval_answers_the_same_in_both_drivers(graph_cluster: Cluster, tmp_path: Path,
                                                          minilm_embedder: Any) -> None:
    """The two-hop question finds the same entries through the workers as in the library, the entry
    only the graph links among them, and ``lightmem graph`` shows the neighbourhood from the history."""
    user = "graph-alice"
    day = datetime.fromisoformat("2025-03-01T10:00:00+00:00")
    conversation = Conversation(user, [DatasetSession(user_id=user, session_id="s1", time_stamp=day, messages=FAMILY)])
    library, queues = Library(graph_cluster, tmp_path, minilm_embedder), Queues(graph_cluster)
    try:
        for driver in (library, queues):
            driver.add(conversation)
        lisbon = next(e["id"] for e in queues.entries(user) if "Lisbon" in e["memory"])
        found = library.memory.retrieve(QUESTION, limit=3, user_id=user, graph_hops=2)
        assert isinstance(found, list)
        hits = queues.producer.search(user, QUESTION, limit=3, graph_hops=2)
        assert [h.id for h in found] == [h["id"] for h in hits] and lisbon in [h["id"] for h in hits]
        assert library.memory.graph(user, "Bella")["edges"]  # the library wrote its own graph too
        shown = subprocess.run([sys.executable, "-m", "producers.cli", "graph", user, "Bella"], env=graph_cluster.env,
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert "Alice --sister--> Bella" in shown.stdout and "Bella --lives in--> Lisbon" in shown.stdout
        assert "Bella lives in Lisbon." in shown.stdout  # the message behind the edge
    finally:
        library.close()
