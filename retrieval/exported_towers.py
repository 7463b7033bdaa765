"""The exported (ONNX) towers a library's searches encode queries with, instead of torch.

A text query needs only the text tower. When the library's model has a valid export
(`indexer.derived`, made by `indexer.onnx_export`) and its weights file is unchanged
since its fingerprint was taken (`indexer.fingerprints`), the query is encoded by ONNX
Runtime: neither torch nor open_clip is imported. A photo query (an image path) likewise
uses the exported image tower, which its first torch-path photo query builds. Otherwise the torch encoder encodes it,
and the export is built from that encoder for the next search, with its int8 copy
(`indexer.quantised_export.text_encoder_int8`, kept only if the fidelity guard's
thresholds hold on fixed captions). Which text tower a search uses follows the
library's precision: `auto` and `int8` use the int8 copy when it exists and was
accepted, else the fp32 export (one note when the copy was refused); `fp32` and `bf16`
use the fp32 export (equal to torch fp32 within 1e-4). The int8 copy is made only where
torch is loaded already (an index run, a torch-path search), never by a cold search. A model that cannot be
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
from indexer.derived import IMAGE_ENCODER, TEXT_ENCODER, TEXT_ENCODER_INT8, Derived, DerivedKind, DerivedRejected, Refused
from indexer.errors import ClipdexError
from indexer.items import ModelRow
from indexer.model_spec import ModelSpec

if TYPE_CHECKING:
    from indexer.models import Encoder
    from indexer.onnx_encode import OnnxImageEncoder
    from retrieval.search import TextEncodeFn

NoteFn = Callable[[str], None]
OFF_SWITCH = "CLIPDEX_NO_EXPORT"
INT8_TEXT_PRECISIONS = ("auto", "int8")  # the library precisions whose text queries may use the int8 text tower


def exports_enabled() -> bool:
    """False when $CLIPDEX_NO_EXPORT is set (to anything but '' or 0)."""
    return os.environ.get(OFF_SWITCH, "") in ("", "0")


class ExportedTowers:
    """The ONNX text and image towers of each model of one library, opened once per process."""

    def __init__(self, home: Path, notify: NoteFn, precision: str = "auto") -> None:
        self.home = home
        self.notify = notify
        self.precision = precision
        self._opened: dict[str, TextEncodeFn] = {}
        self._images: dict[str, OnnxImageEncoder] = {}
        self._noted: set[tuple[str, str]] = set()  # (fingerprint, kind) whose fallback was noted (and not built again)

    def text_encoder(self, row: ModelRow) -> TextEncodeFn | None:
        """The exported text tower of `row`'s model, or None when the torch encoder must encode."""
        if row.fingerprint in self._opened:
            return self._opened[row.fingerprint]
        kinds = (TEXT_ENCODER_INT8, TEXT_ENCODER) if self.precision in INT8_TEXT_PRECISIONS else (TEXT_ENCODER,)
        for kind in kinds:
            found = self._usable(row, kind)
            if found is None:
                continue
            from indexer.onnx_encode import OnnxTextEncoder

            try:
                encoder = OnnxTextEncoder.open(found)
            except (ClipdexError, OSError, RuntimeError) as e:  # tokenizer files gone, ONNX Runtime refusing the file
                self._fall_back(row.fingerprint, str(e), kind)
                continue
            self._opened[row.fingerprint] = encoder.encode
            return encoder.encode
        return None

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
            made = export(encoder, self.home)
        except (DerivedRejected, ClipdexError, ValueError) as e:  # refused, DiskFull, weights not fp32
            self._fall_back(encoder.fingerprint, e.reason if isinstance(e, DerivedRejected) else str(e), kind)
            return
        if kind is TEXT_ENCODER:
            self._build_text_int8(made)

    def _build_text_int8(self, source: Derived) -> None:
        """Quantise the text export (a no-op when the copy exists); a refusal is recorded and
        noted by the search that would have used it, whatever this run's precision."""
        from indexer.quantised_export import text_encoder_int8

        try:
            text_encoder_int8(source, self.home, source.tag.fingerprint)
        except DerivedRejected:
            pass
        except ClipdexError as e:  # DiskFull
            self._fall_back(source.tag.fingerprint, str(e), TEXT_ENCODER_INT8)

    def _fall_back(self, fingerprint: str, reason: str, kind: DerivedKind = TEXT_ENCODER) -> None:
        if (fingerprint, kind.name) not in self._noted:
            self._noted.add((fingerprint, kind.name))
            if kind is TEXT_ENCODER_INT8:
                self.notify(f"text queries use the fp32 ONNX text tower: no int8 text tower for model {fingerprint} ({reason})")
                return
            what = "text queries" if kind is TEXT_ENCODER else "photo queries"
            tower = "text tower" if kind is TEXT_ENCODER else "image tower"
            self.notify(f"{what} use torch: no ONNX {tower} for model {fingerprint} ({reason})")
