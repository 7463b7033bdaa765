"""Typed exceptions of fine-tuning, evaluation and switching models (the CLI maps every ClipdexError)."""

from __future__ import annotations

from indexer.errors import ClipdexError, SavedModelError

__all__ = ["ModelIncomplete", "SavedModelError", "TrainingConfigError"]


class TrainingConfigError(ClipdexError):
    """A fine-tuning option is out of range or contradicts another."""


class ModelIncomplete(ClipdexError):
    """A model cannot become the library's default: some items have no vector from it yet."""

