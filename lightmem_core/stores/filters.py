"""Retrieval filters: a small dict language translated into a Qdrant ``Filter``.

``{"speaker": "Caroline"}`` is equality, ``{"topic_id": {"in": [1, 2]}}`` is membership, and
``{"time_stamp": {"gte": "2023-05-01", "lt": "2023-06-01"}}`` a range. Time fields accept anything
``parse_time`` reads and are compared on their numeric twin in the payload.
"""

from __future__ import annotations

from typing import Any

from qdrant_client import models

from lightmem_core.errors import InvalidInput
from lightmem_core.timeparse import parse_time

_TIME_FIELDS = {"time_stamp": "ts", "created_at": "created_ts", "updated_at": "updated_ts"}
_RANGE_OPS = ("gt", "gte", "lt", "lte")


def prefetch_limit(limit: int) -> int:
    """Candidates each side of a hybrid query contributes to the fusion."""
    return max(limit * 2, 20)


def user_condition(user_id: str) -> models.FieldCondition:
    return models.FieldCondition(key="user_id", match=models.MatchValue(value=user_id))


def build_filter(user_id: str | None, filters: dict[str, Any] | None) -> models.Filter:
    """A filter that always includes the user scope (when given) plus the caller's conditions."""
    must: list[models.Condition] = [user_condition(user_id)] if user_id is not None else []
    for field, spec in (filters or {}).items():
        if field == "user_id":
            raise InvalidInput("filters.user_id: the user scope is set by the user_id argument, not by a filter")
        must.append(_condition(field, spec))
    return models.Filter(must=must)


def _condition(field: str, spec: Any) -> models.FieldCondition:
    if isinstance(spec, dict):
        unknown = set(spec) - {"in", *_RANGE_OPS}
        if unknown:
            raise InvalidInput(f"filters.{field}: unknown operator(s) {sorted(unknown)}; use in, gt, gte, lt, lte")
        if "in" in spec:
            if len(spec) != 1 or not isinstance(spec["in"], list | tuple):
                raise InvalidInput(f"filters.{field}.in: expected a list, alone")
            values = list(spec["in"])
            if not (all(isinstance(v, str) for v in values)
                    or all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
                raise InvalidInput(f"filters.{field}.in: expected strings only or integers only")
            return models.FieldCondition(key=field, match=models.MatchAny(any=values))
        bounds = {op: _number(field, spec[op]) for op in _RANGE_OPS if op in spec}
        return models.FieldCondition(key=_TIME_FIELDS.get(field, field), range=models.Range(**bounds))
    if field in _TIME_FIELDS:
        moment = _number(field, spec)
        return models.FieldCondition(key=_TIME_FIELDS[field], range=models.Range(gte=moment, lte=moment))
    if not isinstance(spec, str | int | bool):
        raise InvalidInput(f"filters.{field}: expected a string, integer or bool for equality, got {type(spec).__name__}")
    return models.FieldCondition(key=field, match=models.MatchValue(value=spec))


def _number(field: str, value: Any) -> float:
    if field in _TIME_FIELDS:
        try:
            return parse_time(value).timestamp()
        except ValueError as exc:
            raise InvalidInput(f"filters.{field}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"filters.{field}: range bounds must be numbers, got {value!r}")
    return float(value)
