"""What the HTTP routes do, over one Library shared by every request thread.

Library calls are serialised by one lock: a search may catch the FAISS index up
from the catalog's change log (items indexed by another process), which mutates
the in-memory index. So that one request cannot hold up the others, work whose
cost a client picks happens before the lock or is bounded: query terms are
limited in number and length, uploads and thumbnails are decoded outside it
(at most DECODE_SLOTS uploads at a time, which bounds their memory), and duplicate
groups (`collapse`, /duplicates) are worked out outside it, one grouping at a time.
"""

from __future__ import annotations

import threading

from indexer.items import IMAGE, INDEXED, ItemRow
from indexer.errors import NoVectors
from indexer.model_spec import ModelSpec
from retrieval.duplicates import DuplicateConfig
from retrieval.library import Library
from retrieval.query import check_term_limits, parse_term
from retrieval.search import ImageResult, QueryImage, Result, decode_query_image, iso_time
from retrieval.server.errors import ItemNotFound
from retrieval.server.images import ImageFile, ItemFile, check_upload, read_item_file
from retrieval.server.schemas import DuplicateOptions, SearchOptions
from retrieval.server.settings import ServerSettings
from retrieval.server.thumbnails import Thumbnail, ThumbnailCache

_MAX_ID = 2**63 - 1
API = "/api/v1"
DECODE_SLOTS = 2  # uploads decoded at once: each takes about 7 bytes a pixel, up to max_upload_pixels


class SearchService:
    def __init__(self, library: Library, settings: ServerSettings) -> None:
        self.library = library
        self.settings = settings
        self.thumbnails = ThumbnailCache(library.home / "thumbnails", settings.thumbnail_px, settings.max_upload_pixels)
        self._lock = threading.Lock()
        self._decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
        self._grouping = threading.Lock()  # one duplicate grouping at a time, run outside self._lock

    def warm_up(self) -> None:
        """Load the model and the index now, so the first request is fast.

        An empty library is fine (indexing may start later); a --model the library
        has no vectors for raises NoVectors.
        """
        try:
            self.search("warm up", SearchOptions(top=1))
        except NoVectors:
            if self.settings.model is not None:
                raise

    def search(self, query: str | None, options: SearchOptions, image: bytes | None = None) -> list[dict[str, object]]:
        """Ranked results as JSON-ready dicts; raises QueryError, ItemNotFound, NoVectors, upload errors."""
        check_term_limits([*([query] if query is not None else []), *options.add, *options.sub])
        filters = options.search_filter()
        upload = self._decode_upload(image) if image is not None else None
        if options.collapse:
            self._group(DuplicateConfig())
        with self._lock:
            self._check_item_terms([query] if query is not None else [], options)
            results = self.library.search(
                query, image=upload, add=options.add, sub=options.sub, top=options.top, offset=options.offset,
                filters=filters, sort=options.sort, texts=options.texts, model=self.settings.model,
                allow_files=False, collapse=DuplicateConfig() if options.collapse else None,
            )
        return [result_dict(r, gps=options.gps) for r in results]

    def _group(self, config: DuplicateConfig) -> None:
        """Group the library's duplicates with `config` unless a current report is kept, holding the library
        lock only to read the catalog and to keep the report: other requests go on while it groups."""
        with self._grouping:
            try:
                with self._lock:
                    job = self.library.duplicates_job(config, model=self.settings.model)
            except NoVectors:
                return  # the request itself says so
            if job.cached is None:
                report = job.run()
                with self._lock:
                    self.library.keep_duplicates(job, report)

    def _decode_upload(self, data: bytes) -> QueryImage:
        """An upload checked from its header, then decoded outside the library lock."""
        check_upload(data, self.settings.max_upload_bytes, self.settings.max_upload_pixels)
        with self._lock:
            spec = self.library.query_input_spec(self.settings.model)
        with self._decode_slots:
            return decode_query_image(data, spec, self.settings.max_upload_pixels)

    def similar(self, item_id: int, options: SearchOptions) -> list[dict[str, object]]:
        """Items like item `item_id` (texts describing it with options.texts); ItemNotFound if unknown."""
        with self._lock:
            self._row(item_id)  # 404 for any id the library does not hold, however large
        return self.search(f"item:{item_id}", options)

    def item(self, item_id: int, gps: bool = False) -> dict[str, object]:
        """An item's metadata, its tags (the server's model's and its folders') and URLs; its position only with `gps`."""
        with self._lock:
            row = self._row(item_id)
            is_image = row.kind == IMAGE
            try:
                tags = self.library.item_tags(row.id, self.settings.model) if is_image else []
            except NoVectors:  # the server's model has not indexed this library (yet): no model tags
                tags = []
        return {
            "id": row.id, "kind": row.kind, "path": row.path, "text": row.text, "width": row.width,
            "height": row.height, "taken_at": iso_time(row.taken_at), "camera": row.camera, "size": row.size,
            "lens": row.lens, "focal_mm": row.focal_mm, "iso": row.iso,
            "lat": row.lat if gps else None, "lon": row.lon if gps else None, "tags": tags,
            "thumbnail_url": thumbnail_url(row.id) if is_image else None,
            "image_url": image_url(row.id) if is_image else None,
        }

    def tags(self, model: str | None = None) -> dict[str, object]:
        """`{"model", "tags": [{"label", "count"}]}`: photos per tag of a model the library holds (default: the
        server's) and of the folders, most used first; raises NoVectors for a model without vectors here."""
        spec = ModelSpec.parse(model) if model else self.settings.model
        with self._lock:
            counts = self.library.tags(spec)
            active = self.library.active_model()
        name = spec.label if spec is not None else (active.name if active is not None else None)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"model": name, "tags": [{"label": label, "count": n} for label, n in ordered]}

    def image(self, item_id: int) -> ImageFile:
        """The verified bytes of an indexed image item's file; ItemNotFound otherwise."""
        return read_item_file(self._file(item_id))

    def thumbnail(self, item_id: int) -> Thumbnail:
        return self.thumbnails.get(self._file(item_id))

    def thumbnail_etag(self, item_id: int) -> str:
        return f'"{self.thumbnails.key(self._file(item_id))}"'

    def duplicates(self, options: DuplicateOptions) -> dict[str, object]:
        """`clipdex duplicates --json`, each member with its thumbnail and image URLs."""
        config = DuplicateConfig(window_s=options.window_s, tier=options.tier)
        self._group(config)
        with self._lock:
            report = self.library.duplicates(config, model=self.settings.model)  # the kept report, unless indexed since
        body = report.to_dict()
        body["groups"] = [
            g.to_dict() | {"members": [m.to_dict() | _urls(m.id) for m in g.members]} for g in report.groups
        ]
        return body

    def status(self) -> dict[str, object]:
        with self._lock:
            return self.library.status().to_dict()

    def _file(self, item_id: int) -> ItemFile:
        """The recorded file of an indexed image: the only way a request reaches a file."""
        if not 0 < item_id <= _MAX_ID:
            raise ItemNotFound(f"item {item_id} is not in the library")
        with self._lock:
            recorded = self.library.recorded_file(item_id)
            roots = self.library.roots() if recorded is not None else []
        if recorded is None:
            raise ItemNotFound(f"item {item_id} is not an indexed photo of this library")
        return ItemFile(item_id, recorded, roots)

    def _row(self, item_id: int) -> ItemRow:
        row = self.library.item(item_id) if 0 < item_id <= _MAX_ID else None
        if row is None or row.status != INDEXED:
            raise ItemNotFound(f"item {item_id} is not in the library")
        return row

    def _check_item_terms(self, query: list[str], options: SearchOptions) -> None:
        """An `item:ID` term naming no item is a 404, not a malformed query."""
        for raw in [*query, *options.add, *options.sub]:
            term = parse_term(raw, allow_files=False)
            if term.kind == "item":
                self._row(int(term.value))


def result_dict(result: Result, gps: bool = False) -> dict[str, object]:
    """The CLI's --json fields, plus the URLs of an image's thumbnail and file.

    A photo's position is where someone lives: it goes out only to a request that asks (`gps=1`).
    """
    d = result.to_dict()
    if isinstance(result, ImageResult):
        if not gps:
            d["lat"] = d["lon"] = None
        d["thumbnail_url"] = thumbnail_url(result.id)
        d["image_url"] = image_url(result.id)
    return d


def _urls(item_id: int) -> dict[str, object]:
    return {"thumbnail_url": thumbnail_url(item_id), "image_url": image_url(item_id)}


def thumbnail_url(item_id: int) -> str:
    return f"{API}/items/{item_id}/thumbnail"


def image_url(item_id: int) -> str:
    return f"{API}/items/{item_id}/image"
