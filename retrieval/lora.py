"""LoRA adapters on the attention layers of open_clip models, merged into plain weights.

open_clip's attention is `nn.MultiheadAttention`, whose fused `in_proj_weight` is
read directly by the functional attention; peft's LoRA support for it is
experimental, with known merge bugs. So clipdex adds the low-rank update as a
torch parametrization: reading `in_proj_weight` (or `out_proj.weight`) returns
W + (alpha / rank)·B·A, every attention code path sees it, and merging replaces
the parameter by exactly that sum.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

TARGETS = (("", "in_proj_weight"), ("out_proj", "weight"))  # (submodule, parameter) of each attention


class LoRADelta(nn.Module):
    """A parametrization W ↦ W + scale·B·A with A (rank, in) and B (out, rank); B starts at zero."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A).to(weight.dtype)  # (out, in)


def add_lora(model: nn.Module, rank: int, alpha: float, *, image: bool = True, text: bool = True) -> list[nn.Parameter]:
    """Freeze `model` and add adapters to the chosen towers' attention layers; return the adapter parameters."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, not {rank}")
    for p in model.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.MultiheadAttention):
            continue
        is_image = name.startswith("visual.")
        if (is_image and not image) or (not is_image and not text):
            continue
        for sub, param in TARGETS:
            owner = module.get_submodule(sub) if sub else module
            weight = getattr(owner, param)
            delta = LoRADelta(weight.shape[0], weight.shape[1], rank, alpha).to(weight.device)
            parametrize.register_parametrization(owner, param, delta)
            params += [delta.A, delta.B]
    return params


def merge_lora(model: nn.Module) -> int:
    """Replace every adapted weight by W + scale·B·A and drop the adapters; return how many were merged."""
    merged = 0
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            names: list[str] = list(module.parametrizations.keys())  # type: ignore[union-attr,operator]
            for param in names:
                parametrize.remove_parametrizations(module, param, leave_parametrized=True)
                merged += 1
    return merged
