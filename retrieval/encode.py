"""Pure batch encoders: model-sized uint8 pixels or strings in, unit vectors out."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.models import Encoder


def encode_images(encoder: Encoder, pixels: np.ndarray) -> np.ndarray:
    """Encode (B, H, W, 3) uint8 images; return (B, D) L2-normalised float32."""
    if len(pixels) == 0:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    dtype = next(encoder.model.parameters()).dtype
    if not pixels.flags.writeable:
        pixels = pixels.copy()  # torch refuses to wrap read-only memory silently
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(encoder.device)  # (B, H, W, 3) uint8
    # Normalise on the device: only uint8 crosses the bus.
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    mean = torch.tensor(encoder.mean, device=encoder.device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, device=encoder.device).view(1, 3, 1, 1)
    x = ((x - mean) / std).to(dtype)
    with torch.no_grad():
        feats = encoder.model.encode_image(x)  # type: ignore[operator]
    return _unit(feats)


def encode_texts(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Encode strings; return (B, D) L2-normalised float32."""
    if len(texts) == 0:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    tokens = encoder.tokenizer(list(texts)).to(encoder.device)  # (B, context_length)
    with torch.no_grad():
        feats = encoder.model.encode_text(tokens)  # type: ignore[operator]
    return _unit(feats)


def _unit(feats: torch.Tensor) -> np.ndarray:
    out = F.normalize(feats.float(), dim=-1).cpu().numpy()  # (B, D)
    return np.ascontiguousarray(out, dtype=np.float32)
