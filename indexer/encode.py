"""Pure batch encoders: model-sized uint8 pixels or strings in, unit vectors out."""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from indexer.models import Encoder


def encode_images(encoder: Encoder, pixels: np.ndarray) -> np.ndarray:
    """Encode (B, H, W, 3) uint8 images; return (B, D) L2-normalised float32."""
    if len(pixels) == 0:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    dtype = next(encoder.model.parameters()).dtype
    if not pixels.flags.writeable:
        pixels = pixels.copy()  # torch refuses to wrap read-only memory silently
    x = torch.from_numpy(np.ascontiguousarray(pixels))  # (B, H, W, 3) uint8
    if encoder.device.type == "cuda":
        x = x.pin_memory().to(encoder.device, non_blocking=True)  # a quarter of the bytes of float32
    else:
        x = x.to(encoder.device)
    # Normalise on the device: only uint8 crosses the bus.
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    mean = torch.tensor(encoder.mean, device=encoder.device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, device=encoder.device).view(1, 3, 1, 1)
    x = ((x - mean) / std).to(dtype)
    with torch.no_grad(), _autocast(encoder):
        feats = _image_forward(encoder)(x)  # (B, D)
    return _unit(feats)


def encode_texts(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Encode strings; return (B, D) L2-normalised float32."""
    if len(texts) == 0:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    tokens = encoder.tokenizer(list(texts)).to(encoder.device)  # (B, context_length)
    with torch.no_grad(), _autocast(encoder, encoder.precision == "bf16" or encoder.text_bf16):
        if _can_trim(encoder.model):
            feats = _encode_text_trimmed(encoder.model, tokens)
        else:
            feats = encoder.model.encode_text(tokens)  # type: ignore[operator]
    return _unit(feats)


def auto_batch_size(encoder: Encoder) -> int:
    """Images per encoder call: large on a GPU (bounded by free memory), 16 on a CPU.

    A CPU gains little past 16 (the matrices already fill the cores), and smaller
    batches let decoding overlap inference from the first batch on.
    """
    if encoder.device.type != "cuda":
        return 16
    free, _ = torch.cuda.mem_get_info(encoder.device)
    side = encoder.input_spec.height * encoder.input_spec.width
    per_image = side * 3 * 2 * 40  # fp16 input with ~40x headroom for activations
    return int(max(32, min(512, free // 2 // per_image)))


def _image_forward(encoder: Encoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """The image encoder to call. Under bf16 autocast, a copy of the image tower whose
    weights are bf16 already: autocast would otherwise cast every weight again on
    every batch (5-10% of a batch of 16 for ViT-B-32-256 on 2 cores)."""
    model = encoder.model
    if encoder.precision != "bf16" or not isinstance(model, (open_clip.CLIP, open_clip.CustomTextCLIP)):
        return model.encode_image  # type: ignore[return-value]
    cached = encoder.bf16_image_tower
    # An Encoder copied with another model in place (evaluating a model in training) must not
    # use the copy made from the first one's tower.
    if cached is None or cached[0] is not model.visual:
        cached = (model.visual, copy.deepcopy(model.visual).to(torch.bfloat16).eval())
        encoder.bf16_image_tower = cached
    return cached[1]


def _autocast(encoder: Encoder, bf16: bool | None = None) -> Any:
    """bf16 autocast where chosen (`bf16`: the texts' choice). Under no_grad, not inference_mode:
    there it gave no gain."""
    enabled = encoder.precision == "bf16" if bf16 is None else bf16
    return torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=enabled)


def _can_trim(model: torch.nn.Module) -> bool:
    """open_clip's own text tower: causal attention and EOT pooling, so padding can go."""
    return (
        isinstance(model, open_clip.CLIP)
        and model.text_pool_type == "argmax"
        and getattr(model, "attn_mask", None) is not None
    )


def _encode_text_trimmed(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP.encode_text over the real token length instead of the padded context.

    With causal attention no position sees the padding after it, so dropping it
    changes nothing but the cost (a 5-word query is ~8 tokens, not 77).
    """
    length = int((tokens != 0).sum(dim=1).max().item())
    tokens = tokens[:, :length]  # (B, L)
    cast_dtype = model.token_embedding.weight.dtype  # (int8 Linear layers have no weight dtype)
    x = model.token_embedding(tokens).to(cast_dtype)  # (B, L, W)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # (B, W) at EOT
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection if model.text_projection is not None else x  # (B, D)


def _unit(feats: torch.Tensor) -> np.ndarray:
    out = F.normalize(feats.float(), dim=-1).cpu().numpy()  # (B, D)
    return np.ascontiguousarray(out, dtype=np.float32)
