"""The update decider backed by an LLM.

Offline, several entries go into one call (``batch_prompt``), as extraction sends several topics, and
up to ``max_in_flight`` calls run at once on a small thread pool (LightMem runs 5 at a time). The
outcomes come back in the entries' order whatever order the calls finish in, so what is applied never
depends on timing. Online, one entry goes per call (``prompt``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby

from lightmem_core.errors import ExtractionParseError
from lightmem_core.llm.base import CallTag, LLMClient
from lightmem_core.llm.cache import discard_reply
from lightmem_core.llm.replies import repair_messages
from lightmem_core.llm.structured import ask_json
from lightmem_core.models import MemoryEntry
from lightmem_core.update import batch_prompt, prompt
from lightmem_core.update.decision import Decision, Failure, Group, Outcome

log = logging.getLogger(__name__)


def _shown(ref: str, entry: MemoryEntry) -> prompt.PromptMemory:
    return prompt.PromptMemory(ref=ref, time=f"{entry.time_stamp:%Y-%m-%d %H:%M} {entry.weekday}", text=entry.memory)


def _decision(reply: prompt.UpdateReply, candidates: list[MemoryEntry]) -> Decision:
    """The reply's refs (``c1``...) turned into entry ids."""
    merge_into = candidates[int(reply.merge_into[1:]) - 1].id if reply.merge_into else None
    if reply.action == "delete" and merge_into is None and len(candidates) == 1:
        merge_into = candidates[0].id  # the only newer entry is what replaces it: keep its provenance there
    return Decision(reply.action, new_text=reply.new_text, reason=reply.reason, merge_into=merge_into)


def batches(groups: Iterable[Group], batch_size: int) -> Iterator[list[Group]]:
    """Consecutive groups of one user, cut into calls of at most ``batch_size`` of about equal size; a
    user's calls come out as soon as the next user's first group (or the end) shows the run complete."""
    for _, same_user in groupby(groups, key=lambda g: g.entry.user_id):
        run = list(same_user)
        calls = -(-len(run) // batch_size)
        size = -(-len(run) // calls)
        yield from (run[i : i + size] for i in range(0, len(run), size))


class LLMUpdateDecider:
    """Asks the model whether newer, similar entries update, replace or leave an entry alone.

    Args:
        client: The LLM stack (retries, accounting, call cache).
        batch_size: Entries judged in one offline call.
        max_in_flight: Offline calls running at once.
    """

    def __init__(self, client: LLMClient, batch_size: int = 8, max_in_flight: int = 5) -> None:
        self.client = client
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight

    def decide(self, entry: MemoryEntry, candidates: list[MemoryEntry]) -> Decision:
        """One entry, one call. Raises ``ExtractionParseError`` when the reply stays invalid after one repair,
        and ``TransientError`` when the endpoint keeps failing."""
        data = prompt.UpdateInput(target=_shown("t", entry),
                                  candidates=[_shown(f"c{i}", c) for i, c in enumerate(candidates, start=1)])
        tag = CallTag("update", entry.user_id, entry.session_id or None)
        reply = ask_json(self.client, prompt.render(data), lambda text: prompt.parse(text, data), tag)
        return _decision(reply, candidates)

    def decide_all(self, groups: Iterable[Group]) -> Iterator[Outcome]:
        """Every group's outcome in order; the calls of several batches are in flight at once, and a user's
        calls start while the next users' groups are still being read (``groups`` may be lazy)."""
        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="lightmem-update") as pool:
            futures = []
            try:
                for batch in batches(groups, self.batch_size):
                    futures.append(pool.submit(self.decide_batch, batch))
                for future in futures:
                    yield from future.result()
            finally:
                for future in futures:
                    future.cancel()  # the caller stopped (an error): send nothing more

    def decide_batch(self, groups: list[Group]) -> list[Outcome]:
        """One call for ``groups`` (one user's); the targets left without a usable decision get one repair
        turn together, and those still without one a ``Failure`` each. The other decisions stand."""
        data = batch_prompt.BatchInput(groups=[
            batch_prompt.TargetGroup(target=_shown(f"t{i}", g.entry),
                                     candidates=[_shown(f"c{j}", c) for j, c in enumerate(g.candidates, start=1)])
            for i, g in enumerate(groups, start=1)])
        messages = batch_prompt.render(data)
        tag = CallTag("update", groups[0].entry.user_id, None)
        try:
            reply = ask_json(self.client, messages, lambda text: batch_prompt.parse(text, data), tag)
        except ExtractionParseError as exc:
            return [Failure(str(exc), exc.raw_reply) for _ in groups]
        decisions, problems, raw = dict(reply.decisions), dict(reply.problems), reply.raw
        if problems:
            log.warning("update reply: %d of %d decisions unusable; one repair turn for them", len(problems), len(groups))
            repair = repair_messages(messages, reply.raw, batch_prompt.problems_text(problems))
            second = self.client.complete(repair, json_mode=True, tag=CallTag("update_repair", tag.user_id, None))
            raw = second.text
            try:
                fixed = batch_prompt.parse(second.text, data, wanted=set(problems))
                decisions.update(fixed.decisions)
                problems = fixed.problems
            except ExtractionParseError as exc:
                discard_reply(self.client, repair, json_mode=True)
                problems = {ref: str(exc) for ref in problems}
        out: list[Outcome] = []
        for i, group in enumerate(groups, start=1):
            ref = f"t{i}"
            if ref in decisions:
                out.append(_decision(decisions[ref], group.candidates))
            else:
                out.append(Failure(f"{problems.get(ref, 'no decision given')} (after one repair)", raw))
        return out
