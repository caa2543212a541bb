"""Parsing of message and session time stamps.

Naive stamps (no time zone) are read as UTC. Accepted: ``datetime``, epoch seconds, ISO 8601
(``2025-01-10``, ``2025-01-10T08:00:00+02:00``), LoCoMo's ``1:56 pm on 8 May, 2023`` and
LongMemEval's ``2023/05/20 (Sat) 02:21``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FORMATS = (
    "%I:%M %p on %d %B, %Y",  # LoCoMo
    "%I:%M %p on %d %b, %Y",
    "%Y/%m/%d %H:%M",  # LongMemEval once the weekday is removed
    "%Y/%m/%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%d %B %Y",
    "%B %d, %Y",
)
_WEEKDAY_IN_PARENS = re.compile(r"\s*\([A-Za-z]{3}\)\s*")


def parse_time(value: object) -> datetime:
    """Return an aware ``datetime`` for ``value``; raise ``ValueError`` when it cannot be read."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        raise ValueError(f"not a time stamp: {value!r}")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:  # out of range, NaN, or past what the OS can give
            raise ValueError(f"epoch seconds out of range: {value!r}") from exc
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a time stamp: {value!r}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = _parse_known_formats(_WEEKDAY_IN_PARENS.sub(" ", text).strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_known_formats(text: str) -> datetime:
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(f"unparsable time stamp {text!r}")


def weekday_name(moment: datetime) -> str:
    """Three-letter English weekday, as LightMem stores it next to each entry."""
    return moment.strftime("%a")
