"""Reading a model's JSON reply into a response model, with the reason when it does not fit."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from lightmem_core.errors import ExtractionParseError
from lightmem_core.llm.base import ChatMessage

M = TypeVar("M", bound=BaseModel)


def load_reply(text: str, model: type[M]) -> M:
    """Parse ``text`` as JSON of ``model``; raises ``ExtractionParseError`` holding the raw reply."""
    try:
        return model.model_validate(json.loads(strip_fence(text)))
    except json.JSONDecodeError as exc:
        raise ExtractionParseError(f"reply is not valid JSON: {exc}", raw_reply=text) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ExtractionParseError(f"reply does not match the schema at {where}: {first['msg']}", raw_reply=text) from exc


def strip_fence(text: str) -> str:
    """The text inside a Markdown code fence, which some models add even in JSON mode."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    return body


def repair_messages(sent: list[ChatMessage], raw_reply: str, reason: str) -> list[ChatMessage]:
    """The one repair attempt: the same conversation, the invalid reply, and what was wrong with it."""
    return [*sent, {"role": "assistant", "content": raw_reply},
            {"role": "user", "content": f"That reply cannot be used: {reason}. Reply again with the JSON object only, "
                                        "following the form and citing only references shown above."}]
