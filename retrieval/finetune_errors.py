"""Typed exceptions of fine-tuning, evaluation and switching models (the CLI maps every ClipdexError)."""

from __future__ import annotations

from retrieval.errors import ClipdexError


class TrainingConfigError(ClipdexError):
    """A fine-tuning option is out of range or contradicts another."""


class ModelIncomplete(ClipdexError):
    """A model cannot become the library's default: some items have no vector from it yet."""


class SavedModelError(ClipdexError):
    """A saved model's name is invalid, taken by an architecture, or its files are missing."""
