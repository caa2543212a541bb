"""Topic segmenters."""

from lightmem_core.segmenters.base import Segmenter

__all__ = ["Segmenter"]
