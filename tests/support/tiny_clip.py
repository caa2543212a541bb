"""A tiny CLIP (two layers per tower, 16-d space) with random weights, built from a ``transformers``
configuration and saved as a model folder, with the bundled MiniLM's tokenizer: what
``multimodal_embedder`` loads in tests, where no real CLIP weights can be downloaded. With random
weights the text and image towers agree on nothing: tests of meaning go through captions, and tests of
the image vector search with an image's own embedding."""

from __future__ import annotations

import base64
import io
from pathlib import Path

TEXT_POSITIONS = 64  # the text tower's longest input; the tokenizer truncates to it


def build_tiny_clip(folder: Path) -> str:
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from lightmem_core.embedders.huggingface import bundled_minilm_path

    torch.manual_seed(1234)
    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path(), model_max_length=TEXT_POSITIONS)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": TEXT_POSITIONS,
                     "eos_token_id": tokenizer.sep_token_id, "bos_token_id": tokenizer.cls_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return str(folder)


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def data_url(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(colour, size)).decode("ascii")
