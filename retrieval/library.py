"""`Library`: the public API that the CLI, the server and the benchmarks all call.

    from retrieval import Library, ModelSpec
    with Library.open("~/clipdex") as lib:
        lib.index(["~/Pictures"], model=ModelSpec.parse("clipdex-tiny"))
        for hit in lib.search("kids on the beach at sunset", top=5):
            print(hit.score, hit.path)

Library owns the operations (index, forget, add texts, import, search, status) and
their write locks; it delegates which model encodes to `ModelChoice`
(retrieval/model_choice.py) and the library folder's config.json to `LibraryConfig`
(retrieval/library_config.py).
"""

from __future__ import annotations

import os
import socket
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from indexer.decode import InputSpec, path_str
from indexer import derived
from indexer.embedding_files import unit_rows
from indexer.catalog import IMAGE, INDEXED, SKIPPED, TEXT, Catalog, FileRow, ItemRow, ModelRow
from indexer.index_store import IndexStore
from indexer.lock import WriteLock
from indexer.scan import is_under
from indexer.texts import read_texts
from indexer.errors import CatalogError, InputFileError, NoVectors, PathNotFound, QueryError
from indexer.model_spec import ModelSpec
from indexer.image_hashes import perceptual_hash
from retrieval.duplicates import DuplicateConfig, DuplicateJob, DuplicateKey, DuplicateReport, HashFn, read_job
from retrieval.reports import AddTextsReport, ImportReport, LibraryStatus
from indexer.precision_guard import ImageEncoding, check_fields, precision_in_use
from retrieval.exported_towers import ExportedTowers
from retrieval.library_config import LibraryConfig, library_home
from retrieval.model_choice import ModelChoice
from retrieval.query import SearchFilter, parse_terms
from retrieval.search import (
    ImageFileEncodeFn, QueryImage, Result, SortOrder, TextCache, TextEncodeFn, decoded_file_vector, image_file_vector,
    query_vector, rank,
)
from retrieval.tagging import TagReport

if TYPE_CHECKING:  # torch and open_clip: imported by the operations that encode, not by a text search
    from indexer.models import Encoder
    from indexer.executor import Executor
    from indexer.ray_executor import RayExecutor
    from indexer.pipeline import IndexReport, ProgressFn
    from retrieval.model_choice import ModelPair


class Library:
    """A photo library: a catalog (source of truth) plus derived FAISS indexes."""

    def __init__(self, home: Path, catalog: Catalog, device: str = "auto", precision: str = "auto") -> None:
        self.home = home
        self.catalog = catalog
        self.device = device
        self.precision = precision
        self.indexes = IndexStore(home / "indexes", catalog)
        derived.remove_stale_work(home)  # an export killed half-way, like a half-written index file
        self.model_choice = ModelChoice(home, catalog, device, precision)
        self._text_cache = TextCache()
        self._duplicates: dict[DuplicateKey, DuplicateReport] = {}  # the last report
        self.notify: Callable[[str], None] = lambda message: None  # notes for stderr (the CLI sets it)
        self.exports = ExportedTowers(home, lambda message: self.notify(message), precision)

    @classmethod
    def open(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        db: str | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> Library:
        """Open (creating if needed) the library at `home`, else $CLIPDEX_HOME, else the user data dir.

        `db` is any SQLAlchemy URL; it is remembered in the library's config.json.
        `precision` is auto (fp16 on CUDA; on a CPU int8 and, where the CPU has it natively, bf16),
        fp32, bf16 or int8; images are encoded at bf16 or int8 once the fidelity guard
        (`indexer.precision_guard`) accepts it, and `auto` falls back along its choices.
        Text queries: auto and int8 use the int8 ONNX text tower where its check accepted it (retrieval.exported_towers).
        """
        root = library_home(home)
        root.mkdir(parents=True, exist_ok=True)
        config = LibraryConfig.read(root)
        config.choose_db(db)
        catalog = Catalog(config.catalog_url, expected_id=config.catalog_id)
        config.record_catalog_id(catalog.catalog_id)
        return cls(root, catalog, device, precision)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------------

    def encoder(self, spec: ModelSpec) -> Encoder:
        """Load (once per Library) the encoder for a model spec, or for a model card (built in, or saved here) by name."""
        return self.model_choice.encoder(spec)

    def default_encoder(self) -> Encoder:
        """The library's model, or the default model for an empty library."""
        return self.model_choice.default_encoder()

    def use(self, spec: ModelSpec) -> ModelRow:
        """Make a model the default for search, in one transaction, only once every item has its vector.

        Raises NoVectors or ModelIncomplete (which counts the items that lack vectors).
        """
        return self.model_choice.use(spec)

    def active_model(self) -> ModelRow | None:
        return self.model_choice.active_model()

    # index, add_texts and search call these
    def _active_encoder(self, active: ModelRow) -> Encoder:
        return self.model_choice.active_encoder(active)

    def _models_for_write(self, spec: ModelSpec | None) -> list[ModelPair]:
        return self.model_choice.models_for_write(spec)

    def _model_for_search(self, spec: ModelSpec | None) -> tuple[ModelRow, Encoder | None]:
        return self.model_choice.model_for_search(spec)

    # -- writing ---------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The write locks (the local lock file, plus an advisory lock on PostgreSQL), and a
        catalog found sound before anything is written. Raises LibraryBusy or CatalogError."""
        with WriteLock(self.home / "lock"), self.catalog.writer_lock(os.getpid(), socket.gethostname()):
            problems = self.catalog.check_integrity()
            if problems:
                raise CatalogError(
                    f"the catalog {self.catalog.url} is damaged ({problems[0]}); clipdex does not write to it: "
                    "restore it from a backup, or move it away and index again to start over"
                )
            yield

    def index(
        self,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        *,
        model: ModelSpec | None = None,
        exclude: Sequence[str] = (),
        batch_size: int = 0,
        progress: ProgressFn | None = None,
        executor: Executor | None = None,
    ) -> IndexReport:
        """Index `paths` (remembered as roots), or rescan every root when none are given.

        `executor` embeds the files (default: a LocalExecutor of `batch_size` images per
        encoder call, 0 for automatic); the caller closes one it passes.
        Raises PathNotFound, LibraryBusy, or a model error before touching anything.
        """
        from indexer.executor import ModelRef
        from indexer.pipeline import IndexOptions, run_index  # torch

        encoding = self._image_encoding() if executor is None else None  # the precision guard (issue 12)
        runner = self._executor(executor, batch_size, encoding)
        with self._writing():
            given = [_real(p) for p in paths or []]
            for p, raw in zip(given, paths or []):
                if not os.path.exists(p):
                    raise PathNotFound(f"{os.fsdecode(raw)} does not exist")
            models = self._models_for_write(model)
            known = self.catalog.list_roots()
            self.catalog.add_roots([p for p in given if not any(is_under(p, r) for r in known)])
            targets = given or known
            present = [r for r in targets if os.path.exists(r)]
            options = IndexOptions(exclude=tuple(exclude))
            refs = [ModelRef(enc.spec, enc.fingerprint) for _, enc in models]
            with runner as ex:
                report = run_index(self.catalog, refs, present, ex, options, progress)
            for check in encoding.finish() if encoding is not None else []:
                self.catalog.record_precision_check(check)
            report.missing_roots = [path_str(r) for r in targets if r not in present]
            # The first search of a fresh library is then torch-free; a run that encoded nothing
            # rebuilds a missing or damaged export (and its int8 copy) too, or finds it valid.
            self._export_text_tower(models)
            for row, _ in models:
                self.indexes.sync(row, IMAGE)
                self.indexes.sync(row, TEXT)
            return report

    def _executor(
        self, given: Executor | None, batch_size: int = 0, images: ImageEncoding | None = None
    ) -> AbstractContextManager[Executor]:
        """`given`, left open; else a LocalExecutor on this library's encoders, closed on exit."""
        if given is None:
            from indexer.local_executor import LocalExecutor  # torch

            return LocalExecutor(self.encoder, batch_size=batch_size, images=images)
        if batch_size:
            raise ValueError("batch_size sizes the default executor; give it to the executor passed instead")
        return nullcontext(given)

    # -- scaling out (issue 16) -------------------------------------------------------------

    def ray_executor(self, address: str | None = None, path_map: Sequence[str] = (), batch_size: int = 0) -> RayExecutor:
        """An executor on the Ray cluster at `address` (None: a local Ray instance) for `index(executor=...)`;
        see `retrieval.scale_out.ray_executor`. The caller closes it (a `with` block)."""
        from retrieval.scale_out import ray_executor

        return ray_executor(
            self.home, self.device, self.precision, address=address, path_map=path_map, batch_size=batch_size
        )

    def _image_encoding(self) -> ImageEncoding:
        """How this run encodes images: a reduced precision once the fidelity guard accepts it for the model."""
        from retrieval.exported_towers import exports_enabled

        checks = self.catalog.precision_checks()
        return ImageEncoding(self.home, checks, self.notify, use_exports=exports_enabled(), auto=self.precision == "auto")

    def forget(self, path: str | os.PathLike[str]) -> int:
        """Remove a root and its items; return the number of items removed."""
        with self._writing():
            target = _real(path)
            roots = self.catalog.list_roots()
            if target not in roots:
                raw = os.fsencode(os.path.abspath(os.fsencode(path)))
                if raw not in roots:
                    known = ", ".join(os.fsdecode(r) for r in roots) or "none"
                    raise PathNotFound(f"{os.fsdecode(path)} is not a root of this library (roots: {known})")
                target = raw
            removed = self.catalog.remove_root(target)
            for row in self.catalog.list_models():
                self.indexes.sync(row, IMAGE)
            return removed

    def add_texts(
        self,
        source: str | os.PathLike[str] | Sequence[str],
        *,
        model: ModelSpec | None = None,
        executor: Executor | None = None,
    ) -> AddTextsReport:
        """Add texts (a file path, or a list of strings) to the text collection and encode them
        (with `executor`, default a LocalExecutor; the caller closes one it passes)."""
        report = AddTextsReport()
        if isinstance(source, (str, os.PathLike)):
            parsed = read_texts(Path(source))
            texts, report.problems = parsed.texts, parsed.problems
        else:
            texts = list(source)
        with self._writing():
            models = self._models_for_write(model)
            ids, report.duplicates = self.catalog.add_texts(texts)
            report.added = len(ids)
            from indexer.executor import ModelRef
            from indexer.pipeline import fill_vectors  # torch

            refs = [ModelRef(enc.spec, enc.fingerprint) for _, enc in models]
            with self._executor(executor) as ex:
                report.encoded = fill_vectors(self.catalog, refs, ex, (TEXT,))
            for row, _ in models:
                self.indexes.sync(row, TEXT)
        return report

    def import_embeddings(
        self,
        items: Sequence[str],
        vectors: np.ndarray,
        *,
        kind: str = IMAGE,
        model: ModelSpec | None = None,
    ) -> ImportReport:
        """Import vectors computed elsewhere for image paths or texts (kind="text").

        The vectors must come from `model` (default: the active model); they are
        L2-normalised on the way in. A repeated path or text keeps its last vector.
        Every row is checked before anything is written: InputFileError names the first
        bad one (a NaN, an infinity, a zero vector, an empty item, mismatched shapes) and
        nothing is imported. Model errors are raised as `index` does.
        """
        vecs = unit_rows(items, vectors, kind)
        last = {key: n for n, key in enumerate(items)}  # the last occurrence of each item wins
        order = sorted(last.values())
        with WriteLock(self.home / "lock"):
            row = self.model_choice.import_model(model)
            if vecs.shape[1] != row.dim:
                raise InputFileError(f"vectors have {vecs.shape[1]} dimensions but model {row.fingerprint} makes {row.dim}")
            if kind == TEXT:
                added, replaced = self.catalog.import_texts([items[n] for n in order], vecs[order], row.id)
            else:
                paths = [_real(items[n]) for n in order]
                added, replaced = self.catalog.import_images(paths, [_stat(p) for p in paths], vecs[order], row.id)
            self.indexes.get(row, kind)
        return ImportReport(added=added, replaced=replaced, model=row.fingerprint)

    # -- searching -------------------------------------------------------------------------

    def search(
        self,
        query: str | None = None,
        *,
        image: bytes | QueryImage | None = None,
        add: Sequence[str] = (),
        sub: Sequence[str] = (),
        top: int = 10,
        offset: int = 0,
        filters: SearchFilter = SearchFilter(),
        sort: SortOrder = "score",
        texts: bool = False,
        model: ModelSpec | None = None,
        force_image: bool = False,
        allow_files: bool = True,
        collapse: DuplicateConfig | None = None,
    ) -> list[Result]:
        """Rank images (or texts, with texts=True) against a weighted query.

        `query` is a term (text, image path, `item:ID`, optionally `W:`-weighted);
        `image` is an image file's bytes (an upload), or one decoded with `query_input_spec`,
        used as a query term of weight 1.
        With allow_files=False no path named in a term is read (the HTTP server).
        `collapse` (a grouping config) leaves out every duplicate group's members but its keeper.
        Raises QueryError for a malformed term and NoVectors when the model has not indexed this library.
        """
        if query is None and image is None:
            raise QueryError("give a query, an image, or both")
        terms = parse_terms(query, tuple(add), tuple(sub), force_image=force_image, allow_files=allow_files)
        row, enc = self._model_for_search(model)

        def get_encoder() -> Encoder:
            return enc if enc is not None else self._active_encoder(row)

        encode_text = self._text_tower(row, get_encoder)
        encode_file = self._image_tower(row, get_encoder) if any(t.kind == "image" for t in terms) else None
        vector = query_vector(
            terms, row, get_encoder, self.catalog, image=image, text_cache=self._text_cache, encode_text=encode_text,
            encode_image_file=encode_file,
        )
        kind = TEXT if texts else IMAGE
        hidden = frozenset(self.duplicates(collapse, model=model).hidden_ids()) if collapse and not texts else frozenset()
        return rank(
            vector, model=row, kind=kind, catalog=self.catalog, indexes=self.indexes,
            top=top, offset=offset, filters=filters, sort=sort, hidden=hidden,
        )

    # -- tags (retrieval.tagging) ----------------------------------------------------------

    def tag(
        self, labels: Sequence[str] | Sequence[Sequence[str]] | None = None, *, folder_tags: bool = False,
        model: ModelSpec | None = None,
    ) -> TagReport:
        """Tag the images with `labels` (one set of alternatives, or a list of sets) by zero-shot classification
        (retrieval.tagging), and with their folder names when `folder_tags`; only new and changed images,
        unless the labels changed.

        Raises NoVectors when the model has not indexed this library, LibraryBusy while another writes.
        """
        from retrieval import tagging

        report = tagging.TagReport()
        with self._writing():
            sets = tagging.as_label_sets(labels or [])
            if sets:
                row, enc = self._model_for_search(model)

                def get_encoder() -> Encoder:
                    return enc if enc is not None else self._active_encoder(row)

                templates = tagging.templates_for(row.name, self.home)
                tagging.tag_with_labels(self.catalog, row, sets, self._text_tower(row, get_encoder), report, templates)
            if folder_tags:
                tagging.tag_folders(self.catalog, report)
        return report

    def tags(self, model: ModelSpec | None = None) -> dict[str, int]:
        """Images per tag: the model's (default: the active model's; tags are stored per model) and the folders'.

        Raises NoVectors for a `model` this library has no vectors of.
        """
        return self.catalog.tag_counts(self._tag_source(model))

    def item_tags(self, item_id: int, model: ModelSpec | None = None) -> list[str]:
        """An item's tags from the model (default: the active model) and its folders, sorted; raises NoVectors."""
        return self.catalog.tags_of([item_id], self._tag_source(model)).get(item_id, [])

    def _tag_source(self, model: ModelSpec | None) -> int:
        """The catalog id of the model whose tags to read, found without loading it where the catalog tells it
        apart by name; folder tags only (FOLDERS) while nothing is indexed."""
        from indexer.catalog_tags import FOLDERS

        if model is None:
            active = self.active_model()
            return FOLDERS if active is None else active.id
        rows = [r for r in self.catalog.list_models() if (r.name, r.pretrained, r.checkpoint) == (model.name, model.pretrained, model.checkpoint)]
        if len(rows) == 1:
            return rows[0].id
        if not rows:
            raise NoVectors(model)
        return self._model_for_search(model)[0].id  # the same name at several weights: the fingerprint decides

    def _text_tower(self, row: ModelRow, get_encoder: Callable[[], Encoder]) -> TextEncodeFn:
        """Encodes query texts: the exported text tower, else the torch encoder, which exports it for next time."""
        exported = self.exports.text_encoder(row)
        if exported is not None:
            return exported

        def with_torch(texts: list[str]) -> np.ndarray:
            from indexer.encode import encode_texts  # torch

            encoder = get_encoder()
            self.exports.build_text(encoder)
            return encode_texts(encoder, texts)

        return with_torch

    def _image_tower(self, row: ModelRow, get_encoder: Callable[[], Encoder]) -> ImageFileEncodeFn:
        """Encodes query photos: the exported image tower, else the torch encoder, which exports it for next time."""
        exported = self.exports.image_encoder(row)
        if exported is not None:
            return lambda path: decoded_file_vector(path, exported.input_spec, lambda px: exported.encode(px[None])[0])

        def with_torch(path: str) -> np.ndarray:
            encoder = get_encoder()
            self.exports.build_image(encoder)
            return image_file_vector(encoder, path)

        return with_torch

    def _export_text_tower(self, models: list[ModelPair]) -> None:
        """Export the active model's text tower after an index run (a no-op when it exists)."""
        active = self.active_model()
        for row, enc in models:
            if active is not None and row.id == active.id:
                self.exports.build_text(enc)

    def query_input_spec(self, model: ModelSpec | None = None) -> InputSpec:
        """How `search(model=...)` wants a query image decoded; raises NoVectors as search does."""
        row, enc = self._model_for_search(model)
        return (enc if enc is not None else self._active_encoder(row)).input_spec

    def item(self, item_id: int) -> ItemRow | None:
        """The catalog row of an item, or None."""
        return self.catalog.items([item_id]).get(item_id)

    def item_file(self, item_id: int) -> bytes | None:
        """The file path of an indexed image item, or None: the only way files are looked up by id."""
        row = self.item(item_id)
        if row is None or row.kind != IMAGE or row.status != INDEXED:
            return None
        return self.catalog.item_path(item_id)

    def recorded_file(self, item_id: int) -> FileRow | None:
        """An indexed image item's file as the catalog recorded it (path, size, mtime), or None."""
        path = self.item_file(item_id)
        rows = [f for f in self.catalog.files_under([path]) if f.id == item_id] if path is not None else []
        return rows[0] if rows else None

    def roots(self) -> list[bytes]:
        """The folders (and single files) indexed into this library, as real paths."""
        return self.catalog.list_roots()

    # -- duplicates (clipdex duplicates, search --collapse) -----------------------------------

    def duplicates(
        self, config: DuplicateConfig = DuplicateConfig(), *, model: ModelSpec | None = None, hash_fn: HashFn = perceptual_hash
    ) -> DuplicateReport:
        """Group the library's photos into exact copies, near copies and bursts (retrieval/duplicates.py).

        Reads nothing but the catalog, and the files of candidate pairs; deletes nothing.
        `hash_fn` is the perceptual hash (benchmarks/duplicates.py compares others).
        The last report per model and config is kept until the catalog's vectors change.
        Raises NoVectors when the model has not indexed this library.
        """
        job = self.duplicates_job(config, model=model, hash_fn=hash_fn)
        return job.cached if job.cached is not None else self.keep_duplicates(job, job.run())

    def duplicates_job(
        self, config: DuplicateConfig = DuplicateConfig(), *, model: ModelSpec | None = None, hash_fn: HashFn = perceptual_hash
    ) -> DuplicateJob:
        """What `duplicates` works on, read from the catalog, with the kept report if it is still current.

        `job.run()` needs neither the library nor its lock (a server groups 100k photos in
        ~20 s without holding up other requests); `keep_duplicates` keeps its report.
        """
        row, _ = self._model_for_search(model)
        key = (row.fingerprint, self.catalog.current_seq(row.id, IMAGE), config, hash_fn)
        cached = self._duplicates.get(key)
        if cached is not None:
            return DuplicateJob(key, [], np.zeros((0, row.dim), np.float32), config, row.fingerprint, hash_fn, cached)
        return read_job(self.catalog, row, key, config, hash_fn)

    def keep_duplicates(self, job: DuplicateJob, report: DuplicateReport) -> DuplicateReport:
        """Keep `job`'s report (the last one only) for later calls while the catalog's vectors stay as they were."""
        self._duplicates = {job.key: report}
        return report

    # -- status ----------------------------------------------------------------------------

    def status(self, *, errors: bool = False) -> LibraryStatus:
        counts = self.catalog.counts()
        active = self.active_model()
        vectors = self.catalog.vector_counts()
        checks = self.catalog.precision_checks()
        from retrieval.exported_towers import exports_enabled

        exports = exports_enabled()
        models = [
            {
                "name": ModelSpec(m.name, m.pretrained, m.checkpoint).label,
                "fingerprint": m.fingerprint,
                "dim": m.dim,
                "images": vectors.get((m.id, IMAGE), 0),
                "texts": vectors.get((m.id, TEXT), 0),
                "active": active is not None and m.id == active.id,
                "precision": precision_in_use(self.precision, self.device, m.fingerprint, checks, use_exports=exports),
                "precision_checks": [check_fields(c) for c in checks if c.fingerprint == m.fingerprint],
            }
            for m in self.catalog.list_models()
        ]
        index: dict[str, object] = {"type": None, "vectors": 0, "in_sync": True, "size_bytes": 0, "memory_bytes": 0}
        if active is not None:
            index = dict(self.indexes.state(active, IMAGE).__dict__)
        roots = [{"path": path_str(r), "exists": os.path.exists(r)} for r in self.catalog.list_roots()]
        size = sum(f.stat().st_size for f in self.home.rglob("*") if f.is_file())
        return LibraryStatus(
            home=str(self.home),
            images=counts.get((IMAGE, INDEXED), 0),
            texts=counts.get((TEXT, INDEXED), 0),
            skipped=counts.get((IMAGE, SKIPPED), 0),
            roots=roots,
            active_model=active.fingerprint if active else None,
            models=models,
            index=index,
            size_bytes=size,
            errors=[{"path": p, "reason": r} for p, r in self.catalog.skipped()] if errors else None,
        )


def _real(path: str | os.PathLike[str]) -> bytes:
    return os.path.realpath(os.fsencode(os.path.expanduser(os.fsdecode(path))))


def _stat(path: bytes) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
