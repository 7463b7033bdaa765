"""Which model a library encodes with: loading encoders once, the active model, and the
models a write, an import or a search uses.

The first model a library is written with becomes its active model (the default for
search); `use` switches it once every item has a vector from the new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from indexer.catalog import IMAGE, TEXT, Catalog, ModelRow
from indexer.errors import ModelNeeded, NoVectors, WeightsChanged
from indexer.lock import WriteLock
from indexer.model_spec import DEFAULT_MODEL, ModelSpec
from retrieval.finetune_errors import ModelIncomplete

if TYPE_CHECKING:  # torch: imported when an encoder is loaded
    from indexer.models import Encoder

ModelPair = tuple[ModelRow, "Encoder"]  # a model as chosen for a write (the library hands the executor a ModelRef)
    

class ModelChoice:
    """The models of one library: its encoders (loaded once each) and its active model."""

    def __init__(self, home: Path, catalog: Catalog, device: str = "auto", precision: str = "auto") -> None:
        self.home = home
        self.catalog = catalog
        self.device = device
        self.precision = precision
        self._encoders: dict[ModelSpec, Encoder] = {}

    def encoder(self, spec: ModelSpec) -> Encoder:
        """Load (once per Library) the encoder for a model spec, or for a model card (built in, or saved here) by name."""
        if spec not in self._encoders:
            from indexer.models import load_encoder

            self._encoders[spec] = load_encoder(spec, self.device, self.precision, home=self.home)
        return self._encoders[spec]

    def default_encoder(self) -> Encoder:
        """The library's model, or the default model for an empty library."""
        active = self.active_model()
        return self.active_encoder(active) if active is not None else self.encoder(ModelSpec.parse(DEFAULT_MODEL))

    def use(self, spec: ModelSpec) -> ModelRow:
        """Make a model the default for search, in one transaction, only once every item has its vector.

        Raises NoVectors or ModelIncomplete (which counts the items that lack vectors).
        """
        with WriteLock(self.home / "lock"):
            enc = self.encoder(spec)
            row = self.catalog.model_by_fingerprint(enc.fingerprint)
            if row is None:
                raise NoVectors(spec)
            images = len(self.catalog.missing_vectors(row.id, IMAGE))
            texts = len(self.catalog.missing_vectors(row.id, TEXT))
            if images or texts:
                raise ModelIncomplete(spec, images, texts)
            self.catalog.set_setting("active_model", row.fingerprint)
            return row

    def active_model(self) -> ModelRow | None:
        """The library's default model for search, or None before anything is written."""
        fp = self.catalog.get_setting("active_model")
        return None if fp is None else self.catalog.model_by_fingerprint(fp)

    def _register(self, encoder: Encoder) -> ModelRow:
        s = encoder.spec
        return self.catalog.ensure_model(encoder.fingerprint, s.name, s.pretrained, s.checkpoint, encoder.dim)

    def active_encoder(self, active: ModelRow) -> Encoder:
        """The encoder of a recorded model; raises WeightsChanged (a ModelNotAvailable) when its weights changed."""
        enc = self.encoder(ModelSpec(active.name, active.pretrained, active.checkpoint))
        if enc.fingerprint != active.fingerprint:
            raise WeightsChanged(active.fingerprint, enc.fingerprint)
        return enc

    def models_for_write(self, spec: ModelSpec | None) -> list[ModelPair]:
        """The active model, plus the requested one; the first model used becomes active."""
        active = self.active_model()
        pairs: list[ModelPair] = []
        if active is not None:
            pairs.append((active, self.active_encoder(active)))
        if spec is not None or active is None:
            enc = self.encoder(spec or ModelSpec.parse(DEFAULT_MODEL))
            row = self._register(enc)
            if active is None:
                self.catalog.set_setting("active_model", row.fingerprint)
            if all(row.id != m.id for m, _ in pairs):
                pairs.append((row, enc))
        return pairs

    def import_model(self, spec: ModelSpec | None) -> ModelRow:
        """The model imported vectors belong to; the first one becomes active. Raises ModelNeeded."""
        active = self.active_model()
        if spec is None:
            if active is None:
                raise ModelNeeded()
            return active
        row = self._register(self.encoder(spec))
        if active is None:
            self.catalog.set_setting("active_model", row.fingerprint)
        return row

    def model_for_search(self, spec: ModelSpec | None) -> tuple[ModelRow, Encoder | None]:
        """The model a search ranks with (and its encoder when it had to be loaded); raises NoVectors."""
        if spec is None:
            active = self.active_model()
            if active is None:
                raise NoVectors()
            return active, None
        enc = self.encoder(spec)
        row = self.catalog.model_by_fingerprint(enc.fingerprint)
        if row is None:
            raise NoVectors(spec)
        return row, enc

