"""Images in messages: reading them from the input, checking them, and handing their bytes on.

A message may carry images as OpenAI-style content parts (``{"type": "image_url", "image_url": {"url":
...}}`` beside ``{"type": "text", "text": ...}`` parts), or LoCoMo's fields (``img_url``: a URL or a list
of them, ``blip_caption``: the caption). A URL is a ``data:image/...;base64,`` URL, a local file path
(also ``file://``), or an ``http(s)://`` URL. Inline and local images are decoded now, so bad image
data fails at ingest with ``InvalidInput`` naming the message and the part; remote ones are kept by
reference and never fetched here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightmem_core.errors import InvalidInput
from lightmem_core.models import ImagePart

REMOTE_SCHEMES = ("http://", "https://")
_MAX_IMAGE_BYTES = 20 * 2**20  # OpenAI's limit per image; anything larger is refused at ingest


def message_images(where: str, raw: Mapping[str, Any]) -> tuple[str, list[ImagePart]]:
    """A raw message's text and images: its content parts, then LoCoMo's ``img_url``. A ``blip_caption``
    without ``img_url`` captions the content's images that have no caption (or stands alone without any)."""
    text, images = split_content(where, raw.get("content"))
    caption, img_url = raw.get("blip_caption"), raw.get("img_url")
    if img_url is None and images and isinstance(caption, str) and caption.strip():
        return text, [i if i.caption else i.model_copy(update={"caption": caption.strip()}) for i in images]
    return text, images + locomo_images(where, img_url, caption)


def split_content(where: str, content: object) -> tuple[str, list[ImagePart]]:
    """A message's text and images from its ``content`` (a string, or a list of content parts)."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InvalidInput(f"{where}.content: expected a string or a list of content parts, got {type(content).__name__}")
    texts: list[str] = []
    images: list[ImagePart] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            images.append(_image_part(at, part))
        else:
            raise InvalidInput(f"{at}: expected {{'type': 'text', 'text': ...}} or {{'type': 'image_url', 'image_url': "
                               "{'url': ...}}")
    return "\n".join(texts), images


def _image_part(at: str, part: Mapping[str, Any]) -> ImagePart:
    inner = part.get("image_url")
    url = inner.get("url") if isinstance(inner, Mapping) else inner
    caption = part.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise InvalidInput(f"{at}.caption: expected a string, got {type(caption).__name__}")
    return ImagePart(url=checked_url(f"{at}.image_url.url", url), caption=(caption.strip() or None) if caption else None)


def locomo_images(where: str, img_url: object, caption: object) -> list[ImagePart]:
    """LoCoMo's shared photos: one image per URL in ``img_url``, each with ``blip_caption``; a caption
    alone is an image known only by its caption."""
    if caption is not None and not isinstance(caption, str):
        raise InvalidInput(f"{where}.blip_caption: expected a string, got {type(caption).__name__}")
    text = (caption.strip() or None) if caption else None
    urls = [img_url] if isinstance(img_url, str) else img_url if img_url is not None else []
    if not isinstance(urls, list):
        raise InvalidInput(f"{where}.img_url: expected a URL or a list of URLs, got {type(img_url).__name__}")
    if not urls:
        return [ImagePart(caption=text)] if text else []
    return [ImagePart(url=checked_url(f"{where}.img_url[{k}]", u), caption=text) for k, u in enumerate(urls)]


def checked_url(at: str, url: object) -> str:
    """``url`` once its image is known to be readable (inline and local images are decoded now)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{at}: expected a data: URL, a file path or an http(s) URL")
    url = url.strip()
    if url.startswith(REMOTE_SCHEMES):
        return url
    try:
        data = image_bytes(url)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{at}: {exc}") from None
    if data is not None and len(data) > _MAX_IMAGE_BYTES:
        raise InvalidInput(f"{at}: {len(data):,} bytes, over the {_MAX_IMAGE_BYTES // 2**20} MB an image may have")
    if data is not None:
        _check_decodes(at, data)
    return url


def _check_decodes(at: str, data: bytes) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{at}: not a readable image ({type(exc).__name__})") from None


def image_bytes(url: str) -> bytes | None:
    """The bytes of an inline or local image; ``None`` for a remote one. ``ValueError``/``OSError`` when
    the data URL is malformed or the file cannot be read."""
    if url.startswith(REMOTE_SCHEMES):
        return None
    if url.startswith("data:"):
        header, sep, body = url.partition(",")
        if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
            raise ValueError("expected a data URL of the form data:image/<type>;base64,<data>")
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the data URL's base64 data does not decode") from None
    path = Path(url.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise ValueError(f"no image file at {path}")
    return path.read_bytes()


def reference(url: str) -> str:
    """What an image entry keeps of its image: a path or remote URL as given, a digest for inline bytes."""
    if url.startswith("data:"):
        return "sha256:" + hashlib.sha256(url.encode("ascii", "replace")).hexdigest()
    return url


def model_url(url: str) -> str:
    """The URL a vision model is sent: inline and remote ones as they are, a local file as a data URL."""
    if url.startswith(("data:", *REMOTE_SCHEMES)):
        return url
    path = Path(url.removeprefix("file://")).expanduser()
    media = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{media};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
