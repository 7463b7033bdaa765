"""Cross-modal nearest-neighbour search: terms → one query vector → ranked items."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np

from indexer.catalog import IMAGE, TEXT, Catalog, ModelRow
from indexer.decode import DEFAULT_MAX_PIXELS, DecodeFailure, InputSpec, decode_bytes, decode_image
from indexer.index_store import IndexStore
from indexer.errors import FiltersOnTexts, NonFiniteQuery, QueryError, QueryOptionError
from retrieval.query import SearchFilter, Term

if TYPE_CHECKING:
    from indexer.models import Encoder  # torch: imported by whoever loads an encoder

TextEncodeFn = Callable[[list[str]], np.ndarray]  # texts → (T, D) unit vectors
ImageFileEncodeFn = Callable[[str], np.ndarray]  # an image file's path → (D,) unit vector

SortOrder = Literal["score", "date"]


# The result shape, defined once: `to_dict` is the CLI's --json, and the HTTP schema
# (retrieval/server/schemas.py) is derived from these fields.


@dataclass(frozen=True)
class ImageResult:
    """A photo found by a search."""

    id: int
    path: str
    score: float
    width: int | None
    height: int | None
    taken_at: str | None  # ISO 8601 in local time, from EXIF; None without EXIF
    # What the camera recorded (indexer.exif), None where it did not; tags from `clipdex tag`
    # and folder tags. Servers leave out lat/lon unless asked (retrieval.server.service).
    camera: str | None = None
    lens: str | None = None
    focal_mm: float | None = None
    iso: int | None = None
    lat: float | None = None
    lon: float | None = None
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class TextResult:
    """A text found by a search."""

    id: int
    text: str
    score: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


Result = ImageResult | TextResult


@dataclass(frozen=True)
class QueryImage:
    """An uploaded image decoded for one model's input, so the decoding can run outside any lock."""

    pixels: np.ndarray  # (H, W, 3) uint8
    spec: InputSpec


def decode_query_image(data: bytes, spec: InputSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> QueryImage:
    """An image file's bytes decoded for `spec`; raises QueryError when they cannot be read."""
    res = decode_bytes(data, spec, max_pixels)
    if isinstance(res, DecodeFailure):
        raise QueryError(f"cannot read the uploaded image: {res.reason}")
    return QueryImage(res.pixels, spec)


def query_vector(
    terms: list[Term],
    model: ModelRow,
    encoder: Callable[[], Encoder],
    catalog: Catalog,
    image: bytes | QueryImage | None = None,
    text_cache: TextCache | None = None,
    encode_text: TextEncodeFn | None = None,
    encode_image_file: ImageFileEncodeFn | None = None,
) -> np.ndarray:
    """The unit vector Σ wᵢ·vᵢ of the terms; the encoder is loaded only if a term needs it.

    Texts are encoded by `encode_text` and image files by `encode_image_file` when
    given (ONNX exports of the towers), else by the encoder.

    Raises QueryError when the terms cancel out, NonFiniteQuery when the sum is not finite.
    """
    total = np.zeros(model.dim, dtype=np.float32)  # (D,)
    if image is not None:
        total += image_vector(encoder(), image)
    texts = [t for t in terms if t.kind == "text"]
    if texts:
        cache = text_cache if text_cache is not None else TextCache(0)
        encode = encode_text or (lambda xs: _encode_texts(encoder(), xs))
        vecs = cache.encode(model.fingerprint, [t.value for t in texts], encode)
        total += np.asarray([t.weight for t in texts], dtype=np.float32) @ vecs
    for t in terms:
        if t.kind == "image":
            vec = encode_image_file(t.value) if encode_image_file else image_file_vector(encoder(), t.value)
            total += t.weight * vec
        elif t.kind == "item":
            total += t.weight * _item_vector(catalog, model, int(t.value))
    if not np.isfinite(total).all():
        raise NonFiniteQuery("the query's vector is not finite (infinity or NaN); lower the weights of its terms")
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise QueryError("the query terms cancel out; change their weights")
    return total / norm


class TextCache:
    """The last `size` query-text vectors per model, so a repeated query skips the encoder."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def encode(self, model: str, texts: list[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """(T, D) vectors for `texts`, encoding only those not cached."""
        missing = list(dict.fromkeys(t for t in texts if (model, t) not in self._vectors))
        found: dict[str, np.ndarray] = dict(zip(missing, encode(missing))) if missing else {}
        out = []
        for t in texts:
            key = (model, t)
            v = found[t] if t in found else self._vectors[key]
            if self.size:
                self._vectors[key] = v
                self._vectors.move_to_end(key)
            out.append(v)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)
        return np.stack(out)  # (T, D)


def _encode_texts(encoder: Encoder, texts: list[str]) -> np.ndarray:
    from indexer.encode import encode_texts  # torch

    return encode_texts(encoder, texts)


def _encode_image(encoder: Encoder, pixels: np.ndarray) -> np.ndarray:
    from indexer.encode import encode_images  # torch

    return encode_images(encoder, pixels[None])[0]  # (D,)


def image_vector(encoder: Encoder, image: bytes | QueryImage) -> np.ndarray:
    """The vector of an uploaded image, given as its file's bytes or already decoded."""
    query = image if isinstance(image, QueryImage) else decode_query_image(image, encoder.input_spec)
    if query.spec != encoder.input_spec:
        raise QueryError("the library's model changed while the image was decoded; send the image again")
    return _encode_image(encoder, query.pixels)


def image_file_vector(encoder: Encoder, path: str) -> np.ndarray:
    """The torch encoder's vector of an image file; QueryError when it cannot be read."""
    return decoded_file_vector(path, encoder.input_spec, lambda pixels: _encode_image(encoder, pixels))


def decoded_file_vector(path: str, spec: InputSpec, encode: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`encode` of an image file decoded for `spec` ((H, W, 3) uint8 → (D,)); QueryError when it cannot be read."""
    res = decode_image(path, spec)
    if isinstance(res, DecodeFailure):
        raise QueryError(f"cannot read query image {path}: {res.reason}")
    return encode(res.pixels)


def _item_vector(catalog: Catalog, model: ModelRow, item_id: int) -> np.ndarray:
    for kind in (IMAGE, TEXT):
        ids, vecs = catalog.vectors(model.id, kind, [item_id])
        if len(ids):
            return vecs[0]
    raise QueryError(f"item {item_id} is not in the library (or has no vector for {model.name})")


def rank(
    vector: np.ndarray,
    *,
    model: ModelRow,
    kind: str,
    catalog: Catalog,
    indexes: IndexStore,
    top: int,
    offset: int = 0,
    filters: SearchFilter = SearchFilter(),
    sort: SortOrder = "score",
    hidden: frozenset[int] = frozenset(),
) -> list[Result]:
    """The best `top` items after `offset`, filtered before ranking; `hidden` ids never rank
    (`search --collapse`: the members of duplicate groups that are not their keeper)."""
    if top < 1 or offset < 0:
        raise QueryOptionError("top", top, "at least 1") if top < 1 else QueryOptionError("offset", offset, "at least 0")
    if kind == TEXT and filters.narrows_items:
        raise FiltersOnTexts()
    allowed = None
    if filters.narrows_items:
        if filters.tags:  # tags are stored per model: the searched model's (and folder tags)
            filters = replace(filters, tag_model=model.id)
        allowed = catalog.filter_ids(kind, filters)
        if len(allowed) == 0:
            return []
    index = indexes.get(model, kind)
    if hidden:
        pool = allowed if allowed is not None else index.ids()
        allowed = pool[~np.isin(pool, np.fromiter(hidden, dtype=np.int64, count=len(hidden)))]
        if len(allowed) == 0:
            return []
    scores, ids = index.search(vector, top + offset, allowed)
    hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
    if filters.min_score is not None:
        hits = [(i, s) for i, s in hits if s >= filters.min_score]
    hits = hits[offset : offset + top]
    rows = catalog.items([i for i, _ in hits])
    tags = catalog.tags_of([i for i, _ in hits], model.id) if kind == IMAGE else {}
    results: list[Result] = []
    for i, s in hits:
        row = rows.get(i)
        if row is None:
            continue  # removed between the index read and the look-up
        if kind == TEXT:
            results.append(TextResult(i, row.text or "", s))
        else:
            results.append(ImageResult(
                i, row.path or "", s, row.width, row.height, iso_time(row.taken_at),
                row.camera, row.lens, row.focal_mm, row.iso, row.lat, row.lon, tags.get(i, []),
            ))  # fmt: skip
    if sort == "date" and kind == IMAGE:
        dates = {i: rows[i].date_key or 0.0 for i, _ in hits if i in rows}
        results.sort(key=lambda r: dates.get(r.id, 0.0), reverse=True)
    return results


def iso_time(epoch: float | None) -> str | None:
    """A timestamp as local ISO 8601 with its UTC offset, or None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat()
