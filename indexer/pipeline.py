"""One indexing run: scan → plan → decode → encode → commit, in batches.

The run is planned from file stats alone (no hashing of unchanged files), then
executed in batches that are each committed in one transaction, so an
interrupted run loses at most the batch in flight.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence, TypeVar

import numpy as np

from indexer.catalog import IMAGE, INDEXED, SKIPPED, TEXT, Catalog, FileRecord, FileRow, ModelRow, WriteBatch
from indexer.decode import DEFAULT_MAX_PIXELS, DecodedImage, DecodeFailure, decode_images
from indexer.scan import FileStat, content_hash, scan_roots
from retrieval.encode import encode_images, encode_texts
from retrieval.models import Encoder


@dataclass(frozen=True)
class IndexOptions:
    exclude: tuple[str, ...] = ()
    batch_size: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


ProgressFn = Callable[[Progress], None]


@dataclass
class IndexReport:
    """Counts for one run, as `clipdex index --json` prints them."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    renamed: int = 0
    skipped: int = 0
    encoded: int = 0
    seconds: float = 0.0
    missing_roots: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["problems"] = [{"path": p, "reason": r} for p, r in self.problems]
        return d


@dataclass
class _Plan:
    encode: list[FileRecord] = field(default_factory=list)  # new or changed files to decode
    copies: list[FileRecord] = field(default_factory=list)  # new files whose twin is indexed
    first: WriteBatch = field(default_factory=WriteBatch)  # removals, renames, touches


ModelPair = tuple[ModelRow, Encoder]
T = TypeVar("T")


def run_index(
    catalog: Catalog,
    models: Sequence[ModelPair],
    roots: Sequence[bytes],
    options: IndexOptions = IndexOptions(),
    progress: ProgressFn | None = None,
) -> IndexReport:
    """Bring the catalog up to date with `roots` (which must exist) and fill missing vectors."""
    started = time.monotonic()
    report = IndexReport()
    scan = scan_roots(roots, options.exclude)
    report.problems.extend(scan.problems)
    plan = _plan(catalog, scan.files, catalog.files_under(roots), report)
    catalog.write(plan.first)

    fill = {m.id: catalog.missing_vectors(m.id, IMAGE) for m, _ in models}
    texts = {m.id: catalog.missing_vectors(m.id, TEXT) for m, _ in models}
    total = len(plan.encode) + sum(map(len, fill.values())) + sum(map(len, texts.values()))
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(Progress(done, total))

    tick(0)
    for batch in _batches(plan.encode, options.batch_size):
        _encode_records(batch, models, options)
        catalog.write(WriteBatch(records=batch))
        for rec in batch:
            if rec.reason:  # counted as added/updated when planned; it is a skip instead
                report.skipped += 1
                report.added -= rec.item_id is None
                report.updated -= rec.item_id is not None
            else:
                report.encoded += 1
        tick(len(batch))
    for batch in _batches(plan.copies, options.batch_size):
        catalog.write(WriteBatch(records=batch))

    # Items that some model of this run has not embedded yet (older items, another model).
    for model, encoder in models:
        report.encoded += _fill_images(catalog, model, encoder, fill[model.id], options, tick)
        report.encoded += _fill_texts(catalog, model, encoder, texts[model.id], options, tick)
    report.seconds = time.monotonic() - started
    return report


def _plan(catalog: Catalog, files: dict[bytes, FileStat], known: list[FileRow], report: IndexReport) -> _Plan:
    plan = _Plan()
    by_path = {row.path: row for row in known}
    new: list[FileStat] = []
    for path, st in files.items():
        row = by_path.get(path)
        if st.reason is not None:  # a FIFO, a socket, a symlink loop: recorded as skipped, never opened
            if row is None or (row.status, row.size, row.mtime_ns) != (SKIPPED, st.size, st.mtime_ns):
                plan.copies.append(FileRecord(path, st.size, st.mtime_ns, "", reason=st.reason, item_id=row.id if row else None))
                report.skipped += 1
        elif row is None:
            new.append(st)
        elif (row.size, row.mtime_ns) != (st.size, st.mtime_ns):
            digest = content_hash(path, st.size) or ""
            if row.status == INDEXED and digest == row.content_hash:
                plan.first.touches.append((row.id, st.size, st.mtime_ns))  # touched, same bytes
            else:
                plan.encode.append(FileRecord(path, st.size, st.mtime_ns, digest, item_id=row.id))
                report.updated += 1

    gone: dict[str, list[FileRow]] = {}
    for row in known:
        if row.path not in files:
            gone.setdefault(row.content_hash or "", []).append(row)
    hashes = {st.path: content_hash(st.path, st.size) or "" for st in new}
    twins = catalog.indexed_by_hash(h for h in hashes.values() if h)
    for st in new:
        digest = hashes[st.path]
        moved = [r for r in gone.get(digest, []) if r.status == INDEXED] if digest else []
        if moved:
            source = moved[0]
            gone[digest].remove(source)
            plan.first.renames.append((source.id, st.path, st.size, st.mtime_ns))
            report.renamed += 1
        elif digest in twins:
            plan.copies.append(FileRecord(st.path, st.size, st.mtime_ns, digest, copy_from=twins[digest][0]))
            report.added += 1
        else:
            plan.encode.append(FileRecord(st.path, st.size, st.mtime_ns, digest))
            report.added += 1
    plan.first.removals = [r.id for rows in gone.values() for r in rows]
    report.removed = len(plan.first.removals)
    return plan


def _encode_records(batch: list[FileRecord], models: Sequence[ModelPair], options: IndexOptions) -> None:
    """Decode a batch once per input geometry and attach each model's vectors."""
    decoded: dict[object, list[DecodedImage | DecodeFailure]] = {}
    for model, encoder in models:
        results = decoded.get(encoder.input_spec)
        if results is None:
            results = decode_images([r.path for r in batch], encoder.input_spec, options.max_pixels)
            decoded[encoder.input_spec] = results
        ok = [(rec, res) for rec, res in zip(batch, results) if isinstance(res, DecodedImage)]
        for rec, res in zip(batch, results):
            if isinstance(res, DecodeFailure):
                rec.reason = res.reason
            elif rec.info is None:
                rec.info = res.info
        if ok:
            vectors = encode_images(encoder, np.stack([res.pixels for _, res in ok]))  # (B, D)
            for (rec, _), v in zip(ok, vectors):
                rec.vectors[model.id] = v


def _fill_images(
    catalog: Catalog,
    model: ModelRow,
    encoder: Encoder,
    missing: list[tuple[int, bytes | str]],
    options: IndexOptions,
    tick: Callable[[int], None],
) -> int:
    encoded = 0
    for batch in _batches(missing, options.batch_size):
        paths = [p for _, p in batch if isinstance(p, bytes)]
        results = decode_images(paths, encoder.input_spec, options.max_pixels)
        ok = [(i, r) for (i, _), r in zip(batch, results) if isinstance(r, DecodedImage)]
        if ok:
            vectors = encode_images(encoder, np.stack([r.pixels for _, r in ok]))
            catalog.write(WriteBatch(vectors=[(i, model.id, v) for (i, _), v in zip(ok, vectors)]))
            encoded += len(ok)
        tick(len(batch))
    return encoded


def _fill_texts(
    catalog: Catalog,
    model: ModelRow,
    encoder: Encoder,
    missing: list[tuple[int, bytes | str]],
    options: IndexOptions,
    tick: Callable[[int], None],
) -> int:
    for batch in _batches(missing, options.batch_size):
        vectors = encode_texts(encoder, [str(t) for _, t in batch])
        catalog.write(WriteBatch(vectors=[(i, model.id, v) for (i, _), v in zip(batch, vectors)]))
        tick(len(batch))
    return len(missing)


def _batches(seq: list[T], size: int) -> list[list[T]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]
