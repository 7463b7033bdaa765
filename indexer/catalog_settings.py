"""The catalog's settings, models and roots: small tables read and written one row at a time."""

from __future__ import annotations

import time
from typing import Iterable

from sqlalchemy import delete, insert, select

from indexer.catalog_connection import CatalogConnection
from indexer.items import ModelRow, PrecisionCheck
from indexer.schema import meta, models, precision_checks, roots


class CatalogSettings(CatalogConnection):
    """Key/value settings, the models vectors come from, and the roots indexed."""

    def _ensure_setting(self, key: str, default: str) -> str:
        with self._write() as conn:
            value = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
            if value is None:
                value = default
                conn.execute(insert(meta).values(key=key, value=value))
            return str(value)

    # -- settings --------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        with self._read() as conn:
            value = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
            return None if value is None else str(value)

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(delete(meta).where(meta.c.key == key))
            conn.execute(insert(meta).values(key=key, value=value))

    # -- models ----------------------------------------------------------------------------

    def ensure_model(
        self, fingerprint: str, name: str, pretrained: str | None, checkpoint: str | None, dim: int
    ) -> ModelRow:
        """Return the model row for a fingerprint, creating it on first use."""
        found = self.model_by_fingerprint(fingerprint)
        if found is not None:
            return found
        with self._write() as conn:
            conn.execute(
                insert(models).values(
                    fingerprint=fingerprint,
                    name=name,
                    pretrained=pretrained,
                    checkpoint=checkpoint,
                    dim=dim,
                    created_at=time.time(),
                )
            )
        row = self.model_by_fingerprint(fingerprint)
        assert row is not None  # just inserted in a committed transaction
        return row

    def model_by_fingerprint(self, fingerprint: str) -> ModelRow | None:
        with self._read() as conn:
            r = conn.execute(select(models).where(models.c.fingerprint == fingerprint)).first()
        return None if r is None else ModelRow(r.id, r.fingerprint, r.name, r.pretrained, r.checkpoint, r.dim)

    def list_models(self) -> list[ModelRow]:
        with self._read() as conn:
            rows = conn.execute(select(models).order_by(models.c.id)).all()
        return [ModelRow(r.id, r.fingerprint, r.name, r.pretrained, r.checkpoint, r.dim) for r in rows]

    # -- precision checks ------------------------------------------------------------------

    def record_precision_check(self, check: PrecisionCheck) -> None:
        """Save the guard's verdict for (model, precision), replacing an earlier one. The model must be registered."""
        row = self.model_by_fingerprint(check.fingerprint)
        if row is None:
            raise ValueError(f"model {check.fingerprint} is not registered in the catalog")
        with self._write() as conn:
            pc = precision_checks.c
            conn.execute(delete(precision_checks).where(pc.model_id == row.id, pc.precision == check.precision))
            conn.execute(insert(precision_checks).values(
                model_id=row.id, precision=check.precision, accepted=int(check.accepted), mean_cosine=check.mean_cosine,
                min_cosine=check.min_cosine, images=check.images, seconds=check.seconds, reason=check.reason,
                checked_at=time.time(),
            ))

    def precision_checks(self) -> list[PrecisionCheck]:
        """Every recorded verdict, by model then precision."""
        with self._read() as conn:
            rows = conn.execute(
                select(models.c.fingerprint, precision_checks)
                .join(models, models.c.id == precision_checks.c.model_id)
                .order_by(precision_checks.c.model_id, precision_checks.c.precision)
            ).all()
        return [
            PrecisionCheck(r.fingerprint, r.precision, bool(r.accepted), r.mean_cosine, r.min_cosine, r.images, r.seconds, r.reason)
            for r in rows
        ]

    # -- roots -----------------------------------------------------------------------------

    def add_roots(self, paths: Iterable[bytes]) -> None:
        known = set(self.list_roots())
        new = [p for p in dict.fromkeys(paths) if p not in known]
        if new:
            with self._write() as conn:
                conn.execute(insert(roots), [{"path": p, "added_at": time.time()} for p in new])

    def list_roots(self) -> list[bytes]:
        with self._read() as conn:
            return [bytes(p) for p in conn.execute(select(roots.c.path).order_by(roots.c.id)).scalars()]
