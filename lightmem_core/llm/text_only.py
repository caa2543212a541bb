"""``TextOnlyClient``: the client stack of a model that reads no images (``memory_manager.configs.vision``
false, the default).

Prompts may carry images as ``image_url`` content parts (extraction of messages with images). For a
model without vision each message's parts are joined back into one text, every image replaced by a
note that it is not shown, and one warning says so per process: the captions stay in the text, so
nothing the model could read is lost, and no request fails on a part the model does not take.
"""

from __future__ import annotations

import logging
import threading

from lightmem_core.llm.base import CallTag, ChatMessage, LLMClient, LLMReply, image_count

log = logging.getLogger(__name__)
NOT_SHOWN = "(image not shown: this model reads no images)"


def without_images(messages: list[ChatMessage]) -> list[ChatMessage]:
    """``messages`` with every content-part list turned into plain text; the caller's list is not changed."""
    out: list[ChatMessage] = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append(m)
            continue
        texts = [str(p.get("text", "")) if p.get("type") == "text" else NOT_SHOWN for p in content]
        out.append({"role": m["role"], "content": "\n".join(texts)})
    return out


class TextOnlyClient:
    """Sends ``inner`` text only; warns once when it had to leave images out."""

    def __init__(self, inner: LLMClient) -> None:
        self.inner = inner
        self._warned = threading.Event()

    def complete(self, messages: list[ChatMessage], *, json_mode: bool = False, tag: CallTag | None = None) -> LLMReply:
        images = sum(image_count(m) for m in messages)
        if images and not self._warned.is_set():
            self._warned.set()
            log.warning("images in prompts are not sent to the LLM: memory_manager.configs.vision is false (set it "
                        "for a vision model); their captions are sent as text. This warning is shown once.")
        return self.inner.complete(without_images(messages) if images else messages, json_mode=json_mode, tag=tag)
