"""The contrastive objective: symmetric InfoNCE, with gradient accumulation that keeps every negative.

Splitting a batch into micro-batches and accumulating plain gradients would shrink
the pool of negatives each caption sees. As open_clip's `--accum-freq` does, the
step first computes every micro-batch's features without gradients, then redoes
one micro-batch at a time with gradients against the cached features of all the
others. The summed gradient equals the full batch's gradient: each micro-batch
contributes the gradient through its own features, and the temperature's
gradient is taken once.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import numpy as np
import torch
import torch.nn.functional as F

from indexer.models import Encoder

MAX_LOGIT_SCALE = float(np.log(100.0))  # CLIP clamps the temperature at 1/100


def pixels_to_input(encoder: Encoder, pixels: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, 3, H, W) normalised, as `encode_images` feeds the model."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(encoder.device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(encoder.mean, device=encoder.device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, device=encoder.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over unit (B, D) features; pair i is row i of both."""
    logits = logit_scale.exp() * image_features.float() @ text_features.float().T  # (B, B)
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def autocast(device: torch.device, precision: str) -> ContextManager[object]:
    """bf16 autocast for precision "bf16", else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _features(model: torch.nn.Module, images: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
    if images is not None:
        return F.normalize(model.encode_image(images), dim=-1)  # type: ignore[operator]
    return F.normalize(model.encode_text(tokens), dim=-1)  # type: ignore[operator]


def train_step(
    model: torch.nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    accum_steps: int = 1,
    precision: str = "fp32",
    lock_image: bool = False,
    lock_text: bool = False,
) -> float:
    """Accumulate into `.grad` the full-batch InfoNCE gradient, in `accum_steps` micro-batches; return the loss.

    A locked tower is run without gradients once. images (B, 3, H, W), tokens (B, L).
    """
    device = images.device
    chunks = list(zip(images.chunk(accum_steps), tokens.chunk(accum_steps)))
    logit_scale: torch.Tensor = model.logit_scale  # type: ignore[assignment]
    if accum_steps == 1 and not (lock_image or lock_text):
        with autocast(device, precision):
            img_f, txt_f = _features(model, images, None), _features(model, None, tokens)
        loss = contrastive_loss(img_f, txt_f, logit_scale)
        loss.backward()
        return float(loss.detach())
    with torch.no_grad(), autocast(device, precision):
        cached_img = [_features(model, im, None) for im, _ in chunks]  # k × (b, D)
        cached_txt = [_features(model, None, tk) for _, tk in chunks]
    loss_value = 0.0
    for j, (im, tk) in enumerate(chunks):
        img_parts, txt_parts = list(cached_img), list(cached_txt)
        with autocast(device, precision):
            if not lock_image:
                img_parts[j] = _features(model, im, None)
            if not lock_text:
                txt_parts[j] = _features(model, None, tk)
        scale = logit_scale if j == 0 else logit_scale.detach()  # the temperature's gradient, once
        loss = contrastive_loss(torch.cat(img_parts), torch.cat(txt_parts), scale)
        if loss.requires_grad:
            loss.backward()
        loss_value = float(loss.detach())
    return loss_value
