"""Fine-tuned models on disk: safetensors weights with a JSON model card beside them.

A model saved by name lives in the library as `models/NAME.safetensors` and
`models/NAME.json`; `--model NAME` then loads it wherever a model is accepted.
The card names the open_clip architecture the weights belong to.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from retrieval.finetune_errors import SavedModelError
from indexer.models import ModelSpec, is_known_architecture

MODELS_DIR = "models"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def card_path(weights: Path) -> Path:
    """`FILE.safetensors` → `FILE.json`."""
    return weights.with_suffix(".json")


def named_path(home: Path, name: str) -> Path:
    """Where a named model's weights go; raise SavedModelError for a bad or taken name."""
    if not _NAME.match(name) or name.endswith(".safetensors"):
        raise SavedModelError(f"model name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    if is_known_architecture(name):
        raise SavedModelError(f"model name {name!r} is an open_clip architecture; choose another --name")
    return home / MODELS_DIR / f"{name}.safetensors"


def resolve(home: Path, spec: ModelSpec) -> ModelSpec:
    """A saved model's name becomes (architecture, its weights); any other spec is returned as is."""
    if spec.pretrained is not None or spec.checkpoint is not None or is_known_architecture(spec.name):
        return spec
    weights = home / MODELS_DIR / f"{spec.name}.safetensors"
    if not _NAME.match(spec.name) or not weights.is_file():
        return spec
    card = read_card(card_path(weights))
    return ModelSpec(str(card["arch"]), None, str(weights.resolve()))


def read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SavedModelError(f"model card {path} cannot be read ({e}); it must sit beside its weights") from None
    if not isinstance(card, dict) or not isinstance(card.get("arch"), str):
        raise SavedModelError(f"model card {path} names no architecture ('arch')")
    return card


def write_model(weights: Path, state: dict[str, torch.Tensor], card: dict[str, Any]) -> None:
    """Write the weights (safetensors) and then the card, each atomically."""
    from safetensors.torch import save_file

    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"arch": str(card["arch"])})
    os.replace(tmp, weights)
    card_tmp = weights.with_name(weights.name + ".json.tmp")
    card_tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    os.replace(card_tmp, card_path(weights))


def list_saved(home: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, card) of every model saved in the library."""
    folder = home / MODELS_DIR
    out = []
    for weights in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        if card_path(weights).is_file():
            out.append((weights.stem, read_card(card_path(weights))))
    return out
