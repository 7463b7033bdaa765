"""One indexing run: scan → plan → execute → commit, in batches.

The run is planned from the catalog and file stats alone (no hashing of unchanged
files): new or changed files to embed with every model of the run, then the items some
model has no vector for yet. An `Executor` (`indexer.executor`) turns the inputs into
vectors and yields them in batches as they finish; each batch is committed here, by the
single writer, in one transaction, so an interrupted run loses at most the batch in flight.

A skipped file is planned again when it changes. One whose decoder failed transiently
(its worker crashed, hung or ran out of memory: the cause may lie outside the file) is
also planned again by the next runs, up to MAX_DECODE_TRIES runs in a row.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence, TypeVar

from indexer.catalog import IMAGE, INDEXED, SKIPPED, TEXT, Catalog, FileRecord, FileRow, ModelRow, WriteBatch
from indexer.exif import read_file_exif
from indexer.executor import EmbedResult, EmbedTask, Executor, Failure, ModelRef, StageClock
from indexer.scan import FileStat, content_hash, scan_roots

MAX_DECODE_TRIES = 3  # runs in a row a file's decoder may crash, hang or run out of memory on it
COPY_BATCH = 256  # copies of indexed files per transaction (no decoding, no encoding)


@dataclass(frozen=True)
class IndexOptions:
    exclude: tuple[str, ...] = ()


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
    exif_read: int = 0  # files indexed before whose new EXIF fields were read (indexer.exif), without re-encoding
    seconds: float = 0.0
    missing_roots: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    devices: dict[str, str] = field(default_factory=dict)  # model fingerprint -> where it ran: "cuda:0 fp16"

    def to_dict(self) -> dict[str, object]:
        """The `--json` summary (problems and timings are reported separately)."""
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        del d["problems"], d["timings"], d["devices"]
        return d


@dataclass
class _Plan:
    encode: list[FileRecord] = field(default_factory=list)  # new or changed files to decode
    copies: list[FileRecord] = field(default_factory=list)  # new files whose twin is indexed
    first: WriteBatch = field(default_factory=WriteBatch)  # removals, renames, touches


@dataclass
class _Job:
    """Inputs for the executor, the models to embed them with, and how a batch of results
    becomes one write batch."""

    tasks: list[EmbedTask]
    models: list[ModelRef]
    to_write: Callable[[list[EmbedResult]], WriteBatch]


T = TypeVar("T")


def run_index(
    catalog: Catalog,
    models: Sequence[ModelRef],
    roots: Sequence[bytes],
    executor: Executor,
    options: IndexOptions = IndexOptions(),
    progress: ProgressFn | None = None,
) -> IndexReport:
    """Bring the catalog up to date with `roots` (which must exist) and fill missing vectors.

    Every model must be registered in the catalog already. Raises what the executor
    raises (ModelNotAvailable for a model whose fingerprint differs) and catalog errors.
    """
    started = time.monotonic()
    report = IndexReport()
    clock = StageClock(report.timings)
    executor_before = dict(executor.timings)
    rows = _rows(catalog, models)
    with clock("scan"):
        scan = scan_roots(roots, options.exclude)
        report.problems.extend(scan.problems)
        plan = _plan(catalog, scan.files, catalog.files_under(roots), report)
    with clock("sql"):
        catalog.write(plan.first)
        fills = _fill_jobs(catalog, models, rows, (IMAGE, TEXT))  # planned before new files add theirs
    files = _files_job(plan.encode, models, rows, report)
    tick = _ticker(progress, len(files.tasks) + sum(len(job.tasks) for job in fills))
    _execute(catalog, executor, files, clock, tick)
    with clock("sql"):
        for batch in _batches(plan.copies, COPY_BATCH):
            catalog.write(WriteBatch(records=batch))
    for job in fills:  # items that some model of this run has not embedded yet (older items, another model)
        report.encoded += _execute(catalog, executor, job, clock, tick)
    with clock("exif"):
        report.exif_read = _read_exif(catalog)
    report.devices = dict(getattr(executor, "devices", {}))  # the executor's word on where each model ran
    for stage, seconds in executor.timings.items():
        report.timings[stage] = report.timings.get(stage, 0.0) + seconds - executor_before.get(stage, 0.0)
    report.seconds = time.monotonic() - started
    return report


def fill_vectors(catalog: Catalog, models: Sequence[ModelRef], executor: Executor, kinds: Sequence[str]) -> int:
    """Embed every indexed item of `kinds` that lacks a vector from one of `models`; return the vectors added."""
    jobs = _fill_jobs(catalog, models, _rows(catalog, models), kinds)
    return sum(_execute(catalog, executor, job, StageClock({}), _ticker(None, 0)) for job in jobs)


def _execute(
    catalog: Catalog, executor: Executor, job: _Job, clock: StageClock, tick: Callable[[int], None]
) -> int:
    """The one loop: execute the job, committing each batch of results as it comes; return the vectors written."""
    if not job.tasks:
        return 0
    written = 0
    for results in executor.embed(job.tasks, job.models):
        batch = job.to_write(results)
        with clock("sql"):
            catalog.write(batch)
        written += len(batch.vectors) + sum(len(rec.vectors) for rec in batch.records)
        tick(len(results))
    return written


def _rows(catalog: Catalog, models: Sequence[ModelRef]) -> dict[str, ModelRow]:
    """The catalog row of each model, by fingerprint."""
    rows = {}
    for m in models:
        row = catalog.model_by_fingerprint(m.fingerprint)
        if row is None:
            raise ValueError(f"model {m.fingerprint} is not registered in the catalog; register it before indexing")
        rows[m.fingerprint] = row
    return rows


def _read_exif(catalog: Catalog) -> int:
    """Read the EXIF fields of indexed files that have not had them read (indexed before the
    fields existed, copies, imports): headers only, committed in batches; return the files read."""
    done = 0
    for batch in _batches(catalog.exif_unread(), COPY_BATCH):
        catalog.set_exif([(item_id, read_file_exif(path)) for item_id, path in batch])
        done += len(batch)
    return done


def _ticker(progress: ProgressFn | None, total: int) -> Callable[[int], None]:
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(Progress(done, total))

    tick(0)
    return tick


def _files_job(records: list[FileRecord], models: Sequence[ModelRef], rows: dict[str, ModelRow], report: IndexReport) -> _Job:
    """New and changed files, with every model: each becomes an indexed or a skipped item."""

    def to_write(results: list[EmbedResult]) -> WriteBatch:
        batch = []
        for res in results:
            rec = records[res.key]
            rec.info = res.info
            rec.vectors = {rows[fp].id: v for fp, v in res.vectors.items()}
            _record_failures(rec, res.failures)
            batch.append(rec)
        _count(batch, report)
        return WriteBatch(records=batch)

    tasks = [EmbedTask(n, rec.path, IMAGE) for n, rec in enumerate(records)]
    return _Job(tasks, list(models), to_write)


def _fill_jobs(
    catalog: Catalog, models: Sequence[ModelRef], rows: dict[str, ModelRow], kinds: Sequence[str]
) -> list[_Job]:
    """Per model and kind, the indexed items without its vector (a failed decode is left for the next run)."""
    jobs = []
    for model in models:
        model_id = rows[model.fingerprint].id
        for kind in kinds:
            tasks = [EmbedTask(item_id, value, kind) for item_id, value in catalog.missing_vectors(model_id, kind)]
            jobs.append(_Job(tasks, [model], _vectors_of(model.fingerprint, model_id)))
    return jobs


def _vectors_of(fingerprint: str, model_id: int) -> Callable[[list[EmbedResult]], WriteBatch]:
    """Results as vectors of existing items (the result key is the item id)."""

    def to_write(results: list[EmbedResult]) -> WriteBatch:
        return WriteBatch(vectors=[(r.key, model_id, r.vectors[fingerprint]) for r in results if fingerprint in r.vectors])

    return to_write


def _count(batch: list[FileRecord], report: IndexReport) -> None:
    for rec in batch:
        if rec.reason:  # counted as added/updated when planned; it is a skip instead
            report.skipped += 1
            report.added -= rec.item_id is None
            report.updated -= rec.item_id is not None
        else:
            report.encoded += 1


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


def _record_failures(rec: FileRecord, failures: list[Failure]) -> None:
    """Set the file's skip reason and its count of decoder failures in a row (none: it decoded)."""
    lasting = [f for f in failures if not f.is_transient]
    if not failures or lasting:  # decoded, or the file itself cannot be decoded until it changes
        rec.decode_tries = 0
        rec.reason = lasting[0].reason if lasting else None
        return
    rec.decode_tries += 1
    if rec.decode_tries < MAX_DECODE_TRIES:
        rec.reason = f"{failures[0].reason}; retried on the next run (try {rec.decode_tries} of {MAX_DECODE_TRIES})"
    else:
        rec.reason = f"{failures[0].reason} on {MAX_DECODE_TRIES} runs in a row; retried only when the file changes"


def _batches(seq: list[T], size: int) -> list[list[T]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]
