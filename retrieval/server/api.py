"""The HTTP API under /api/v1: thin routes over SearchService."""

from __future__ import annotations

import time
from typing import Annotated, Callable

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from retrieval.server.errors import QueryStringTooLong
from retrieval.server.saved_models import saved_models_router
from retrieval.server.schemas import ERRORS, DuplicateOptions, Item, SearchOptions, SearchResponse, TagList
from retrieval.server.service import API, SearchService
from retrieval.server_record import CATALOG_HEADER

MAX_QUERY_STRING_BYTES = 32 * 1024  # as sent, percent-encoded; 16 terms of 300 characters fit
_THUMBNAIL_CACHE = "private, max-age=3600"
_IMAGE_CACHE = "private, no-cache"  # revalidate: the ETag changes when the file does


def bounded_query_string(request: Request) -> None:
    """Refuse (414) a query string over MAX_QUERY_STRING_BYTES before its parameters are validated."""
    size = len(request.scope.get("query_string", b""))
    if size > MAX_QUERY_STRING_BYTES:
        raise QueryStringTooLong(f"the query string is {size:,} bytes, over the {MAX_QUERY_STRING_BYTES:,} byte limit")


def api_router(service: SearchService) -> APIRouter:
    router = APIRouter(prefix=API, tags=["search"], responses=ERRORS, dependencies=[Depends(bounded_query_string)])

    @router.get("/search", response_model=SearchResponse)
    def search(
        q: Annotated[str, Query(description="Text, or `item:ID`; optionally weighted `W:TERM`.")],
        options: Annotated[SearchOptions, Query()],
    ) -> Response:
        """Photos (or, with texts=true, texts) matching a text query, with weighted add/sub terms."""
        return _results(service, lambda: service.search(q, options))

    @router.post("/search/image", response_model=SearchResponse)
    def search_image(
        file: Annotated[UploadFile, File(description="A JPEG, PNG, WebP, GIF, TIFF or BMP photo.")],
        options: Annotated[SearchOptions, Form()],
    ) -> Response:
        """Photos like an uploaded one; with texts=true, the texts that best describe it."""
        data = file.file.read(service.settings.max_upload_bytes + 1)
        return _results(service, lambda: service.search(None, options, image=data))

    @router.get("/items/{item_id:int}/similar", response_model=SearchResponse)
    def similar(item_id: int, options: Annotated[SearchOptions, Query()]) -> Response:
        """More like this: photos like item `item_id` (with texts=true, the texts describing it)."""
        return _results(service, lambda: service.similar(item_id, options))

    @router.get("/items/{item_id:int}", response_model=Item)
    def item(
        item_id: int,
        gps: Annotated[bool, Query(description="Return the photo's position (`lat`, `lon`); without it they are null.")] = False,
    ) -> dict[str, object]:
        """An item's metadata: path, date, camera, lens, focal length, ISO, size, tags, and its URLs."""
        return service.item(item_id, gps=gps)

    # Tags (issue 15): the labels of `clipdex tag` and folder tags, with their counts.
    @router.get("/tags", response_model=TagList, tags=["library"])
    def tags(
        model: Annotated[str | None, Query(description="A model this library indexed with (default: the server's).")] = None,
    ) -> dict[str, object]:
        """Every tag of a model (tags are stored per model) and every folder tag, with the photos holding it."""
        return service.tags(model)

    @router.get("/items/{item_id:int}/thumbnail", response_class=Response)
    def thumbnail(item_id: int, request: Request) -> Response:
        """A small JPEG of an indexed photo, upright and without EXIF/GPS."""
        etag = service.thumbnail_etag(item_id)
        headers = {"ETag": etag, "Cache-Control": _THUMBNAIL_CACHE}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        thumb = service.thumbnail(item_id)
        headers["ETag"] = thumb.etag
        if thumb.path is None:
            return Response(thumb.data, media_type="image/jpeg", headers=headers)
        return FileResponse(thumb.path, media_type="image/jpeg", headers=headers)

    @router.get("/items/{item_id:int}/image", response_class=Response)
    def image(item_id: int, request: Request) -> Response:
        """The original file of an indexed photo, by id only."""
        img = service.image(item_id)
        headers = {"ETag": img.etag, "Cache-Control": _IMAGE_CACHE}
        if request.headers.get("if-none-match") == img.etag:
            return Response(status_code=304, headers=headers)
        return Response(img.data, media_type=img.media_type, headers=headers)

    @router.get("/duplicates", tags=["library"])
    def duplicates(options: Annotated[DuplicateOptions, Query()]) -> dict[str, object]:
        """Groups of exact copies, near copies and bursts, each with a suggested keeper (nothing is deleted)."""
        return service.duplicates(options)

    @router.get("/status", tags=["library"])
    def status() -> dict[str, object]:
        """What the library holds: counts, roots, models and the index's state."""
        return service.status()

    # The library's fine-tuned models: cards and run charts (retrieval/server/saved_models.py).
    router.include_router(saved_models_router(service.library.home))
    return router


def _results(service: SearchService, search: Callable[[], list[dict[str, object]]]) -> JSONResponse:
    """`{"results": [...]}`, built from plain dicts (the schema documents it; re-validating each
    result would only cost time), with the search's own duration in a Server-Timing header and
    the catalog it searched in X-Clipdex-Catalog (`clipdex search` uses only answers from its own)."""
    start = time.perf_counter()
    results = search()
    ms = (time.perf_counter() - start) * 1000
    headers = {"Server-Timing": f"search;dur={ms:.1f}", CATALOG_HEADER: service.library.catalog.catalog_id}
    return JSONResponse({"results": results}, headers=headers)
