"""How a model is named: `ModelSpec`, the default model, and the precisions. Imports no torch.

The search path names the library's model (for the fingerprint cache and the derived
exports) without loading it, so the spec lives apart from `models`, which loads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import UnknownModel

DEFAULT_MODEL = "ViT-B-32-256:datacomp_s34b_b86k"
TINY_MODEL = "clipdex-tiny"
PRECISIONS = ("auto", "fp32", "bf16", "int8", "fp16")
SCHEMAS = ("hf-hub:", "local-dir:")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: an open_clip name, an optional pretrained tag, optional local weights."""

    name: str
    pretrained: str | None = None
    checkpoint: str | None = None  # absolute path of a local weights file

    @classmethod
    def parse(cls, text: str, checkpoint: str | os.PathLike[str] | None = None) -> ModelSpec:
        """Parse `NAME`, `NAME:TAG` or `hf-hub:org/repo`; raise UnknownModel on an empty name."""
        text = text.strip()
        name, tag = text, None
        if not text.startswith(SCHEMAS) and ":" in text:
            name, tag = text.rsplit(":", 1)
        if not name or tag == "":
            raise UnknownModel(f"model {text!r} is not of the form NAME or NAME:PRETRAINED_TAG")
        ckpt = str(Path(checkpoint).expanduser().resolve()) if checkpoint is not None else None
        return cls(name, tag, ckpt)

    @property
    def label(self) -> str:
        base = f"{self.name}:{self.pretrained}" if self.pretrained else self.name
        return f"{base} ({Path(self.checkpoint).name})" if self.checkpoint else base
