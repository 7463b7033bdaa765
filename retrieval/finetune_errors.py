"""Typed exceptions of fine-tuning, evaluation and switching models (the CLI maps every ClipdexError)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from indexer.errors import BadOption, CheckpointError, ClipdexError, SavedModelError

if TYPE_CHECKING:
    from indexer.models import ModelSpec

__all__ = ["CannotResume", "ModelIncomplete", "SavedModelError", "TrainingConfigError"]


class TrainingConfigError(BadOption):
    """A fine-tuning option is out of range or contradicts another."""


class ModelIncomplete(ClipdexError):
    """A model cannot become the library's default: some items have no vector from it yet."""

    def __init__(self, model: ModelSpec, images: int, texts: int) -> None:
        super().__init__(
            f"{images} images and {texts} texts have no vector from {model.label} yet; "
            "index the library with that model first"
        )
        self.model = model
        self.images = images  # indexed images without a vector from `model`
        self.texts = texts


class CannotResume(CheckpointError):
    """A fine-tuning run cannot resume: its checkpoint is missing, or was made by another run."""

    def __init__(self, path: str, is_missing: bool) -> None:
        why = f"nothing to resume: no checkpoint at {path}" if is_missing else (
            f"checkpoint {path} was made with other data or settings"
        )
        super().__init__(f"{why}; start the run over without resuming")
        self.path = path
        self.is_missing = is_missing  # False: it belongs to another run
