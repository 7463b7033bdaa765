"""The API's request options and response bodies, as they appear in the OpenAPI schema."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, Field, create_model

from retrieval.query import SearchFilter
from retrieval.search import ImageResult, TextResult


class SearchOptions(BaseModel):
    """Paging, filters and collection, shared by every search route."""

    top: int = Field(default=20, ge=1, le=500, description="Number of results.")
    offset: int = Field(default=0, ge=0, le=100_000, description="Results to skip (paging).")
    path: str | None = Field(
        default=None,
        description="Only paths matching this glob; `*` spans folders, a relative glob matches at any depth.",
    )
    after: str | None = Field(default=None, description="Taken on or after this ISO 8601 date or date-time.")
    before: str | None = Field(default=None, description="Taken before this ISO 8601 date or date-time.")
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0, description="Only results scoring at least this.")
    camera: str | None = Field(default=None, description="Camera make or model contains this (any case).")
    lens: str | None = Field(default=None, description="Lens make or model contains this (any case).")
    focal: str | None = Field(default=None, description="Focal length in mm: `MIN..MAX`, `MIN..`, `..MAX` or `N`.")
    iso: str | None = Field(default=None, description="ISO: `MIN..MAX`, `MIN..`, `..MAX` or `N`.")
    near: str | None = Field(default=None, description="Taken near `LAT,LON` (decimal degrees; south and west negative).")
    within: str | None = Field(default=None, description="Distance for `near`: `5km` (the default), `800m`.")
    has_gps: bool = Field(default=False, description="Only photos with a GPS position.")
    tag: list[str] = Field(default=[], description="Only photos with every one of these tags.")
    gps: bool = Field(
        default=False, description="Return each photo's position (`lat`, `lon`); without it they are null."
    )
    sort: Literal["score", "date"] = Field(
        default="score", description="Order the results by score or by date (newest first)."
    )
    texts: bool = Field(default=False, description="Search the text collection instead of the images.")
    add: list[str] = Field(
        default=[],
        description="Terms to add: text or `item:ID`, optionally weighted `W:TERM`. "
        "At most 16 terms (q, add and sub together) of at most 300 characters each.",
    )
    sub: list[str] = Field(default=[], description="Terms to subtract, like `add`.")
    collapse: bool = Field(
        default=False, description="Show each duplicate group (see /duplicates) as its keeper only, filtered before ranking."
    )

    def search_filter(self) -> SearchFilter:
        """The filter parameters, read by the parser the CLI uses too; raises InvalidFilter."""
        return SearchFilter.parse(
            path=self.path, after=self.after, before=self.before, min_score=self.min_score, camera=self.camera,
            lens=self.lens, focal=self.focal, iso=self.iso, near=self.near, within=self.within,
            has_gps=self.has_gps, tag=self.tag,
        )


def hit_model(
    result: type[ImageResult | TextResult], name: str, notes: dict[str, str], links: tuple[str, ...] = ()
) -> type[BaseModel]:
    """A response model with the fields of a search result (retrieval.search, the one definition)
    and their types, described by `notes`, plus the URL fields in `links`."""
    types = get_type_hints(result)
    spec: dict[str, Any] = {f.name: (types[f.name], Field(description=notes.get(f.name))) for f in fields(result)}
    spec |= {link: (str, ...) for link in links}
    return create_model(name, **spec)


ImageHit = hit_model(
    ImageResult,
    "ImageHit",
    {
        "taken_at": "EXIF capture time, ISO 8601 in the server's time zone.",
        "lat": "Latitude in degrees (south negative); null unless the request has `gps=1`.",
        "lon": "Longitude in degrees (west negative); null unless the request has `gps=1`.",
        "tags": "Tags from `clipdex tag` and folder tags.",
    },
    links=("thumbnail_url", "image_url"),  # added by service.result_dict
)
TextHit = hit_model(TextResult, "TextHit", {})


class SearchResponse(BaseModel):
    results: list[ImageHit | TextHit]  # type: ignore[valid-type]


class Item(BaseModel):
    id: int
    kind: Literal["image", "text"]
    path: str | None
    text: str | None
    width: int | None
    height: int | None
    taken_at: str | None
    camera: str | None
    size: int | None = Field(description="File size in bytes.")
    lens: str | None = Field(default=None, description="Lens make and model from EXIF.")
    focal_mm: float | None = Field(default=None, description="Focal length in mm from EXIF.")
    iso: int | None = Field(default=None, description="ISO speed from EXIF.")
    lat: float | None = Field(default=None, description="Latitude in degrees (south negative); null unless `gps=true`.")
    lon: float | None = Field(default=None, description="Longitude in degrees (west negative); null unless `gps=true`.")
    tags: list[str] = Field(default=[], description="Tags of the server's model (`clipdex tag`) and folder tags.")
    thumbnail_url: str | None
    image_url: str | None


class TagCount(BaseModel):
    label: str
    count: int = Field(description="Photos with this tag.")


class TagList(BaseModel):
    model: str | None = Field(description="The model whose tags these are (folder tags are every model's).")
    tags: list[TagCount] = Field(description="Most used first, then by label.")


class DuplicateOptions(BaseModel):
    """How /duplicates groups: the CLI's `clipdex duplicates` options."""

    tier: Literal["exact", "near", "burst"] = Field(
        default="burst", description="Group up to this tier: exact, near (exact and near) or burst (all)."
    )
    window_s: float = Field(default=10.0, ge=0, le=86_400, description="Burst: EXIF capture times at most this many seconds apart.")


class ErrorDetail(BaseModel):
    status: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed query, term, date or Host header",
        401: "Missing or wrong token",
        404: "Unknown item, or no vectors for the model",
        413: "Upload over the byte or pixel limit",
        414: "Query string over 32 KiB",
        422: "Invalid parameter or unsupported upload",
    }.items()
}
