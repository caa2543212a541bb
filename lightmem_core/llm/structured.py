"""Ask for JSON, validate it, and allow exactly one repair attempt before giving up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from lightmem_core.errors import ExtractionParseError
from lightmem_core.llm.base import CallTag, ChatMessage, LLMClient
from lightmem_core.llm.cache import discard_reply
from lightmem_core.llm.replies import repair_messages

log = logging.getLogger(__name__)
T = TypeVar("T")


def ask_json(client: LLMClient, messages: list[ChatMessage], parse: Callable[[str], T], tag: CallTag) -> T:
    """Call, parse; on an invalid reply call once more with the reason; raise ``ExtractionParseError`` after that.

    This is where a reply's validity is known: an invalid one is taken out of the call cache (when
    ``kv_cache`` keeps one), so that only valid replies are replayed. The error raised at the end holds
    the second raw reply and both reasons.
    """
    first = client.complete(messages, json_mode=True, tag=tag)
    try:
        return parse(first.text)
    except ExtractionParseError as exc:
        discard_reply(client, messages, json_mode=True)
        log.warning("%s reply invalid (%s); one repair attempt", tag.purpose, exc)
        reason = str(exc)
    repair_tag = CallTag(f"{tag.purpose}_repair", tag.user_id, tag.session_id)
    repair = repair_messages(messages, first.text, reason)
    second = client.complete(repair, json_mode=True, tag=repair_tag)
    try:
        return parse(second.text)
    except ExtractionParseError as exc:
        discard_reply(client, repair, json_mode=True)
        raise ExtractionParseError(f"{exc} (after one repair; first reply: {reason})", raw_reply=second.text) from exc
