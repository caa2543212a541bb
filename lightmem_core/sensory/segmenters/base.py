"""The segmenter role: cut one session's messages into topic segments."""

from __future__ import annotations

from typing import Protocol

from lightmem_core.models import Message


class Segmenter(Protocol):
    """Returns the indices (ascending, > 0) at which a new topic starts in ``messages``.

    ``messages`` always belong to one session: segments never cross a session boundary.
    """

    def boundaries(self, messages: list[Message]) -> list[int]: ...
