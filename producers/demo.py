"""``make demo`` in library mode: LightMemory in one process on the embedded default.

Adds the bundled sample sessions (LightMem README's pistachio/Rex session and two more) and, when
``../shared/data/locomo10.json`` is present, the first LoCoMo conversation; then answers a few
questions, runs the offline update and prints the token statistics. Data goes to ``.lightmem/demo``,
cleared at the start of each run.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lightmem_core import LightMemory
from workers.settings import deep_merge, get_settings, memory_config

DEMO_DIR = Path(".lightmem/demo")
QUESTIONS = [
    ("demo-user", "What is the name of my dog?"),
    ("demo-user", "Where do I work?"),
    ("demo-user", "What food should you avoid suggesting to me?"),
]


def sample_sessions() -> list[dict[str, Any]]:
    text = resources.files("producers.data").joinpath("sample_sessions.json").read_text(encoding="utf-8")
    data: list[dict[str, Any]] = json.loads(text)
    return data


def build_memory() -> LightMemory:
    base = memory_config().model_dump(exclude_none=True)
    paths = {
        "history_db_path": str(DEMO_DIR / "history.db"),
        "embedding_retriever": {"configs": {"path": str(DEMO_DIR / "qdrant")}},
    }
    return LightMemory.from_config(deep_merge(base, paths))


def add_samples(memory: LightMemory) -> int:
    turns = 0
    for session in sample_sessions():
        msgs = [dict(t, time_stamp=session["time_stamp"]) for t in session["turns"]]
        memory.add_memory(msgs, force_segment=True, force_extract=True, user_id=session["user_id"], session_id=session["session_id"])
        turns += len(msgs)
    return turns


def add_locomo(memory: LightMemory) -> tuple[str, list[tuple[str, str, str]]] | None:
    path = get_settings().data_dir / "locomo10.json"
    if not path.is_file():
        print(f"(no LoCoMo file at {path}; skipping the LoCoMo conversation)")
        return None
    from producers.datasets import load_locomo

    conversation = load_locomo(path)[0]
    for session in tqdm(conversation.sessions, desc=f"adding LoCoMo {conversation.user_id}", unit="session", disable=None):
        memory.add_memory(session.messages, force_segment=True, user_id=conversation.user_id, session_id=session.session_id)
    memory.flush(conversation.user_id)
    questions = [(conversation.user_id, q.question, str(q.answer)) for q in conversation.questions[:4]]
    return conversation.user_id, questions


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    start = time.perf_counter()
    memory = build_memory()
    try:
        print(f"extraction: {memory.config.memory_manager.model_name}; retrieval: {memory.config.retrieve_strategy}")
        add_samples(memory)
        locomo = add_locomo(memory)
        queued = memory.construct_update_queue_all_entries()
        applied = memory.offline_update_all_entries(score_threshold=0.9)
        print(f"offline update: {queued} entries queued, decisions {applied}")
        asked = [(u, q, None) for u, q in QUESTIONS] + (locomo[1] if locomo else [])
        for user_id, question, expected in asked:
            print(f"\nQ ({user_id}): {question}" + (f"   [reference answer: {expected}]" if expected else ""))
            print(memory.retrieve(question, limit=3, user_id=user_id, as_text=True))
        print("\nstatistics:")
        for key, value in memory.get_token_statistics().items():
            print(f"  {key:28s} {value:,.3f}" if isinstance(value, float) and value % 1 else f"  {key:28s} {value:,.0f}")
        print(f"\ndone in {time.perf_counter() - start:.1f} s")
    finally:
        memory.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
