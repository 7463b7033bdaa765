"""The registry of models: open_clip's architectures, and model cards in folders.

A model card is `NAME.json` beside its weights `NAME.safetensors`; it names the
open_clip architecture (`arch`) the weights belong to. Cards are looked up in two
folders, in order: the package's `weights/` (the built-in models, such as
clipdex-tiny) and a library's `models/` (models fine-tuned and saved by name).
`--model NAME` then loads a card wherever a model is accepted. open_clip and torch are
imported only by the functions that need them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.errors import ModelNotAvailable, NameTaken, SavedModelError
from indexer.model_spec import SCHEMAS

if TYPE_CHECKING:
    import torch

BUILTIN_DIR = Path(__file__).parent / "weights"  # built-in cards and their weights
CONFIG_DIR = Path(__file__).parent / "model_configs"  # open_clip configs of the built-in architectures
MODELS_DIR = "models"  # a library's saved models
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelCard:
    """A model found by name: its architecture and weights file, and the card's other fields."""

    name: str
    arch: str
    weights: Path
    is_builtin: bool
    card: dict[str, Any]


def register_builtin_models() -> None:
    """Make the architecture configs shipped in the package known to open_clip."""
    import open_clip  # only here and in `is_known_architecture`: reading a card needs no torch

    if not all(p.stem in open_clip.list_models() for p in CONFIG_DIR.glob("*.json")):
        open_clip.add_model_config(CONFIG_DIR)


def is_known_architecture(name: str) -> bool:
    import open_clip

    register_builtin_models()
    return name.startswith(SCHEMAS) or name in open_clip.list_models()


def card_path(weights: Path) -> Path:
    """`FILE.safetensors` → `FILE.json`."""
    return weights.with_suffix(".json")


def find_card(name: str, home: Path | None = None) -> ModelCard | None:
    """The card called `name`: built in first, then saved in the library at `home`; None if there is none.

    A saved model never shadows an architecture. Raises SavedModelError for a card that
    cannot be read, ModelNotAvailable for a card whose weights file is missing.
    """
    if not _NAME.match(name):
        return None
    for folder, is_builtin in _folders(home):
        if not is_builtin and is_known_architecture(name):
            return None
        weights = folder / f"{name}.safetensors"
        if weights.is_file() or card_path(weights).is_file():
            return _card(name, weights, is_builtin)
    return None


def list_cards(home: Path | None = None, problems: list[str] | None = None) -> list[ModelCard]:
    """Every card with its weights: the built-in ones, then those saved in the library at `home`.

    An unreadable card raises SavedModelError, or, given `problems`, is left out and its
    message appended there (a listing that one damaged card must not take down)."""
    out = []
    for folder, is_builtin in _folders(home):
        for weights in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            if card_path(weights).is_file():
                try:
                    out.append(_card(weights.stem, weights, is_builtin))
                except SavedModelError as e:
                    if problems is None:
                        raise
                    problems.append(str(e))
    return out


def named_path(home: Path, name: str) -> Path:
    """Where a named model's weights go; raise SavedModelError for a bad or taken name."""
    if not _NAME.match(name) or name.endswith(".safetensors"):
        raise SavedModelError(f"model name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    if is_known_architecture(name) or (BUILTIN_DIR / f"{name}.json").is_file():
        raise NameTaken(name)
    return home / MODELS_DIR / f"{name}.safetensors"


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


def _folders(home: Path | None) -> list[tuple[Path, bool]]:
    """(folder, holds built-in models) in look-up order."""
    return [(BUILTIN_DIR, True)] + ([(home / MODELS_DIR, False)] if home is not None else [])


def _card(name: str, weights: Path, is_builtin: bool) -> ModelCard:
    card = read_card(card_path(weights))
    if not weights.is_file():
        fix = "reinstall clipdex" if is_builtin else "save the model again"
        if is_builtin and isinstance(card.get("trained_by"), str):
            fix += f", or rebuild them with `{card['trained_by']}`"
        what = "built-in" if is_builtin else "saved"
        raise ModelNotAvailable(f"the {what} {name} weights are missing ({weights}); {fix}")
    return ModelCard(name, str(card["arch"]), weights.resolve(), is_builtin, card)
