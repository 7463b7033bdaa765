"""The exported (ONNX) towers a library's searches encode queries with, instead of torch.

A text query needs only the text tower. When the library's model has a valid export
(`indexer.derived`, made by `indexer.onnx_export`) and its weights file is unchanged
since its fingerprint was taken (`indexer.fingerprints`), the query is encoded by ONNX
Runtime: neither torch nor open_clip is imported. A photo query (an image path) likewise
uses the exported image tower, which its first torch-path photo query builds. Otherwise the torch encoder encodes it,
and the export is built from that encoder for the next search. A model that cannot be
exported (unsupported tokenizer, failed validation, fp16/int8 weights, a full disk)
keeps the torch path, with one note per process through `notify`; never an error.

`CLIPDEX_NO_EXPORT=1` turns exports off (neither used nor built): the torch path, as a
benchmark baseline, and for tests that do not test exports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from indexer import derived, fingerprints
from indexer.derived import IMAGE_ENCODER, TEXT_ENCODER, Derived, DerivedKind, DerivedRejected, Refused
from indexer.errors import ClipdexError
from indexer.items import ModelRow
from indexer.model_spec import ModelSpec

if TYPE_CHECKING:
    from indexer.models import Encoder
    from indexer.onnx_encode import OnnxImageEncoder
    from retrieval.search import TextEncodeFn

NoteFn = Callable[[str], None]
OFF_SWITCH = "CLIPDEX_NO_EXPORT"


def exports_enabled() -> bool:
    """False when $CLIPDEX_NO_EXPORT is set (to anything but '' or 0)."""
    return os.environ.get(OFF_SWITCH, "") in ("", "0")


class ExportedTowers:
    """The ONNX text and image towers of each model of one library, opened once per process."""

    def __init__(self, home: Path, notify: NoteFn) -> None:
        self.home = home
        self.notify = notify
        self._opened: dict[str, TextEncodeFn] = {}
        self._images: dict[str, OnnxImageEncoder] = {}
        self._noted: set[tuple[str, str]] = set()  # (fingerprint, kind) whose fallback was noted (and not built again)

    def text_encoder(self, row: ModelRow) -> TextEncodeFn | None:
        """The exported text tower of `row`'s model, or None when the torch encoder must encode."""
        if row.fingerprint in self._opened:
            return self._opened[row.fingerprint]
        found = self._usable(row, TEXT_ENCODER)
        if found is None:
            return None
        from indexer.onnx_encode import OnnxTextEncoder

        try:
            encoder = OnnxTextEncoder.open(found)
        except (ClipdexError, OSError, RuntimeError) as e:  # tokenizer files gone, ONNX Runtime refusing the file
            self._fall_back(row.fingerprint, str(e))
            return None
        self._opened[row.fingerprint] = encoder.encode
        return encoder.encode

    def image_encoder(self, row: ModelRow) -> OnnxImageEncoder | None:
        """The exported image tower of `row`'s model (photo queries), or None when torch must encode."""
        if row.fingerprint in self._images:
            return self._images[row.fingerprint]
        found = self._usable(row, IMAGE_ENCODER)
        if found is None:
            return None
        from indexer.onnx_encode import OnnxImageEncoder

        try:
            encoder = OnnxImageEncoder.open(found)
        except (ValueError, OSError, RuntimeError) as e:  # an older tag, ONNX Runtime refusing the file
            self._fall_back(row.fingerprint, str(e), IMAGE_ENCODER)
            return None
        self._images[row.fingerprint] = encoder
        return encoder

    def _usable(self, row: ModelRow, kind: DerivedKind) -> Derived | None:
        """`row`'s valid export of `kind` when exports are on and its weights are unchanged, else None."""
        if not exports_enabled() or (row.fingerprint, kind.name) in self._noted:
            return None
        label = ModelSpec(row.name, row.pretrained, row.checkpoint).label
        if fingerprints.for_spec(self.home, label) != row.fingerprint:
            return None  # weights never fingerprinted here, or changed: the torch path checks them
        found = derived.lookup(self.home, row.fingerprint, kind)
        if isinstance(found, Refused):
            self._fall_back(row.fingerprint, found.reason, kind)
            return None
        return found

    def build_text(self, encoder: Encoder) -> None:
        """Export `encoder`'s text tower unless there is one (or a noted refusal); a refusal becomes a note."""
        self._build(encoder, TEXT_ENCODER)

    def build_image(self, encoder: Encoder) -> None:
        """Export `encoder`'s image tower, as `build_text` does the text tower."""
        self._build(encoder, IMAGE_ENCODER)

    def _build(self, encoder: Encoder, kind: DerivedKind) -> None:
        if not exports_enabled() or (encoder.fingerprint, kind.name) in self._noted:
            return
        if encoder.precision == "fp16":  # (int8 keeps fp32 weights: only its images go through an int8 copy)
            self._fall_back(encoder.fingerprint, f"it is made from fp32 weights, and this run loaded {encoder.precision} ones", kind)
            return
        from indexer import onnx_export

        export = onnx_export.text_encoder if kind is TEXT_ENCODER else onnx_export.image_encoder
        try:
            export(encoder, self.home)
        except (DerivedRejected, ClipdexError, ValueError) as e:  # refused, DiskFull, weights not fp32
            self._fall_back(encoder.fingerprint, e.reason if isinstance(e, DerivedRejected) else str(e), kind)

    def _fall_back(self, fingerprint: str, reason: str, kind: DerivedKind = TEXT_ENCODER) -> None:
        if (fingerprint, kind.name) not in self._noted:
            self._noted.add((fingerprint, kind.name))
            what = "text queries" if kind is TEXT_ENCODER else "photo queries"
            tower = "text tower" if kind is TEXT_ENCODER else "image tower"
            self.notify(f"{what} use torch: no ONNX {tower} for model {fingerprint} ({reason})")
