"""One indexing run: scan → plan → decode → encode → commit, in batches.

The run is planned from file stats alone (no hashing of unchanged files), then
executed in batches that are each committed in one transaction, so an
interrupted run loses at most the batch in flight.

A skipped file is planned again when it changes. One whose decoder process crashed,
hung or ran out of memory (a `WorkerFailure`: the cause may lie outside the file) is
also planned again by the next runs, up to MAX_DECODE_TRIES runs in a row.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from indexer.catalog import IMAGE, INDEXED, SKIPPED, TEXT, Catalog, FileRecord, FileRow, ModelRow, WriteBatch
from indexer.decode import DEFAULT_MAX_PIXELS, DecodedImage, DecodeFailure, DecodeResult, InputSpec
from indexer.decode_worker import WorkerFailure
from indexer.workers import DecodePool, PoolConfig
from indexer.scan import FileStat, content_hash, scan_roots
from indexer.encode import auto_batch_size, encode_images, encode_texts
from indexer.models import Encoder

MAX_DECODE_TRIES = 3  # runs in a row a file's decoder may crash, hang or run out of memory on it


@dataclass(frozen=True)
class IndexOptions:
    exclude: tuple[str, ...] = ()
    batch_size: int = 0  # 0: sized for the device (auto_batch_size)
    max_pixels: int = DEFAULT_MAX_PIXELS
    pool: PoolConfig = PoolConfig()


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
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per stage

    def to_dict(self) -> dict[str, object]:
        """The `--json` summary (problems and timings are reported separately)."""
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        del d["problems"], d["timings"]
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
    clock = _Clock(report.timings)
    with clock("scan"):
        scan = scan_roots(roots, options.exclude)
        report.problems.extend(scan.problems)
        plan = _plan(catalog, scan.files, catalog.files_under(roots), report)
    with clock("sql"):
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
    if options.batch_size <= 0:
        options = replace(options, batch_size=min(auto_batch_size(enc) for _, enc in models))
    with _Pools(options) as pools:
        specs = {enc.input_spec for _, enc in models}
        paths = [r.path for r in plan.encode]
        for start, decoded in _decode_batches(paths, specs, pools, options.batch_size, clock):
            batch = plan.encode[start : start + options.batch_size]
            _attach(batch, decoded, models, clock)
            with clock("sql"):
                catalog.write(WriteBatch(records=batch))
            _count(batch, report)
            tick(len(batch))
        with clock("sql"):
            for batch in _batches(plan.copies, options.batch_size):
                catalog.write(WriteBatch(records=batch))
        # Items that some model of this run has not embedded yet (older items, another model).
        for model, encoder in models:
            report.encoded += _fill_images(catalog, model, encoder, fill[model.id], pools, options, tick, clock)
            report.encoded += _fill_texts(catalog, model, encoder, texts[model.id], options, tick, clock)
    report.seconds = time.monotonic() - started
    return report


def _count(batch: list[FileRecord], report: IndexReport) -> None:
    for rec in batch:
        if rec.reason:  # counted as added/updated when planned; it is a skip instead
            report.skipped += 1
            report.added -= rec.item_id is None
            report.updated -= rec.item_id is not None
        else:
            report.encoded += 1


class _Clock:
    """Adds wall time per stage into a dict (what the benchmarks report)."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0


class _Pools:
    """One decoder pool per input geometry, started on first use and closed at the end."""

    def __init__(self, options: IndexOptions) -> None:
        self.options = options
        self._pools: dict[InputSpec, DecodePool] = {}

    def get(self, spec: InputSpec) -> DecodePool:
        if spec not in self._pools:
            self._pools[spec] = DecodePool(spec, replace(self.options.pool, max_pixels=self.options.max_pixels))
        return self._pools[spec]

    def __enter__(self) -> _Pools:
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in self._pools.values():
            pool.close()


def _decode_batches(
    paths: list[bytes], specs: set[InputSpec], pools: _Pools, batch_size: int, clock: _Clock
) -> Iterator[tuple[int, dict[InputSpec, list[DecodeResult]]]]:
    """(offset, results per geometry) for consecutive batches; workers decode ahead meanwhile."""
    if not paths:
        return
    streams = {spec: pools.get(spec).decode(paths) for spec in specs}
    for start in range(0, len(paths), batch_size):
        n = min(batch_size, len(paths) - start)
        with clock("wait_decode"):  # time the encoder waited on decoders: ~0 when overlapped
            decoded = {spec: list(islice(stream, n)) for spec, stream in streams.items()}
        yield start, decoded


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
        elif row.status == SKIPPED and 0 < row.decode_tries < MAX_DECODE_TRIES:  # its decoder failed: retry
            digest = row.content_hash or ""
            plan.encode.append(FileRecord(path, st.size, st.mtime_ns, digest, item_id=row.id, decode_tries=row.decode_tries))
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


def _attach(
    batch: list[FileRecord], decoded: dict[InputSpec, list[DecodeResult]], models: Sequence[ModelPair], clock: _Clock
) -> None:
    """Record each file's decode outcome and attach every model's vector to the decoded ones."""
    failures: dict[int, list[DecodeFailure]] = {}
    for model, encoder in models:
        results = decoded[encoder.input_spec]
        ok = [(rec, res) for rec, res in zip(batch, results) if isinstance(res, DecodedImage)]
        for i, (rec, res) in enumerate(zip(batch, results)):
            if isinstance(res, DecodeFailure):
                failures.setdefault(i, []).append(res)
            elif rec.info is None:
                rec.info = res.info
        if ok:
            with clock("encode"):
                vectors = encode_images(encoder, np.stack([res.pixels for _, res in ok]))  # (B, D)
            for (rec, _), v in zip(ok, vectors):
                rec.vectors[model.id] = v
    for i, rec in enumerate(batch):
        _record_failures(rec, failures.get(i, []))


def _record_failures(rec: FileRecord, failures: list[DecodeFailure]) -> None:
    """Set the file's skip reason and its count of decoder failures in a row (none: it decoded)."""
    lasting = [f for f in failures if not isinstance(f, WorkerFailure)]
    if not failures or lasting:  # decoded, or the file itself cannot be decoded until it changes
        rec.decode_tries = 0
        rec.reason = lasting[0].reason if lasting else None
        return
    rec.decode_tries += 1
    if rec.decode_tries < MAX_DECODE_TRIES:
        rec.reason = f"{failures[0].reason}; retried on the next run (try {rec.decode_tries} of {MAX_DECODE_TRIES})"
    else:
        rec.reason = f"{failures[0].reason} on {MAX_DECODE_TRIES} runs in a row; retried only when the file changes"


def _fill_images(
    catalog: Catalog,
    model: ModelRow,
    encoder: Encoder,
    missing: list[tuple[int, bytes | str]],
    pools: _Pools,
    options: IndexOptions,
    tick: Callable[[int], None],
    clock: _Clock,
) -> int:
    encoded = 0
    paths = [p for _, p in missing if isinstance(p, bytes)]
    spec = encoder.input_spec
    for start, decoded in _decode_batches(paths, {spec}, pools, options.batch_size, clock):
        batch = missing[start : start + options.batch_size]
        ok = [(i, r) for (i, _), r in zip(batch, decoded[spec]) if isinstance(r, DecodedImage)]
        if ok:
            with clock("encode"):
                vectors = encode_images(encoder, np.stack([r.pixels for _, r in ok]))
            with clock("sql"):
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
    clock: _Clock,
) -> int:
    for batch in _batches(missing, options.batch_size):
        with clock("encode"):
            vectors = encode_texts(encoder, [str(t) for _, t in batch])
        with clock("sql"):
            catalog.write(WriteBatch(vectors=[(i, model.id, v) for (i, _), v in zip(batch, vectors)]))
        tick(len(batch))
    return len(missing)


def _batches(seq: list[T], size: int) -> list[list[T]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]
