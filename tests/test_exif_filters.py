"""Camera, lens, focal length, ISO and place: read from real EXIF, stored on index, filtered before ranking."""

from __future__ import annotations

import io
import json
import math
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational as R
from typer.testing import CliRunner

from cli.app import app
from conftest import TINY, exif_with, make_photo
from indexer.exif import PhotoExif, read_exif, read_file_exif
from indexer.filters import InvalidFilter, Place, SearchFilter, haversine_km
from retrieval.library import Library
from serverkit import client_for

SYDNEY = ("S", (R(33, 1), R(51, 1), R(3144, 100)), "E", (R(151, 1), R(12, 1), R(5100, 100)))  # -33.8587, 151.2142
PARIS = ("N", (R(48, 1), R(51, 1), R(3024, 100)), "E", (R(2, 1), R(17, 1), R(4020, 100)))  # 48.8584, 2.2945
VERSAILLES = ("N", (R(48, 1), R(48, 1), R(2100, 100)), "E", (R(2, 1), R(7, 1), R(3900, 100)))  # ~17 km from PARIS
LIMA = ("S", (R(12, 1), R(2, 1), R(3600, 100)), "W", (R(77, 1), R(2, 1), R(2400, 100)))  # -12.0433, -77.04
FIJI_EAST = ("S", (R(17, 1), R(0, 1), R(0, 1)), "W", (R(179, 1), R(58, 1), R(0, 1)))  # across the antimeridian
FIJI_WEST = ("S", (R(17, 1), R(0, 1), R(0, 1)), "E", (R(179, 1), R(58, 1), R(0, 1)))


def exif_for(
    camera: tuple[str, str] | None = None, lens: tuple[str, str] | None = None, focal: R | None = None,
    iso: object = None, gps: tuple[object, object, object, object] | None = None, taken: str | None = None,
) -> Image.Exif:
    exif = exif_with(taken=taken, camera=camera)
    sub = exif.get_ifd(0x8769)
    if lens is not None:
        sub[0xA433], sub[0xA434] = lens
    if focal is not None:
        sub[0x920A] = focal
    if iso is not None:
        sub[0x8827] = iso
    if gps is not None:
        g = exif.get_ifd(0x8825)
        g[1], g[2], g[3], g[4] = gps
    return exif


def round_trip(exif: Image.Exif) -> PhotoExif:
    """What the reader finds in a real JPEG written with `exif`."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", exif=exif.tobytes())
    with Image.open(io.BytesIO(buf.getvalue())) as img:
        return read_exif(img.getexif())


# -- reading EXIF ------------------------------------------------------------------------------


def test_gps_signs_follow_the_references_and_rationals_are_read() -> None:
    assert round_trip(exif_for(gps=SYDNEY)) == PhotoExif(lat=-33.8587333, lon=151.2141667)
    assert round_trip(exif_for(gps=PARIS)) == PhotoExif(lat=48.8584, lon=2.2945)
    assert round_trip(exif_for(gps=LIMA)) == PhotoExif(lat=-12.0433333, lon=-77.04)


@pytest.mark.parametrize(
    "gps",
    [
        ("N", (R(48, 0), R(51, 1), R(30, 1)), "E", PARIS[3]),  # a zero denominator
        ("N", (R(95, 1), R(0, 1), R(0, 1)), "E", PARIS[3]),  # beyond the pole
        ("N", (R(48, 1), R(61, 1), R(0, 1)), "E", PARIS[3]),  # 61 minutes
        ("X", PARIS[1], "E", PARIS[3]),  # neither N nor S
        ("N", PARIS[1], "", PARIS[3]),  # no reference
        ("N", PARIS[1], "E", (R(181, 1), R(0, 1), R(0, 1))),  # beyond the antimeridian
        ("N", (R(0, 1), R(0, 1), R(0, 1)), "E", (R(0, 1), R(0, 1), R(0, 1))),  # 0, 0: a phone without a fix
    ],
)
def test_a_malformed_position_is_absent_and_leaves_the_other_fields(gps: tuple[object, object, object, object]) -> None:
    found = round_trip(exif_for(lens=("Canon", "RF35mm F1.8"), focal=R(35, 1), iso=800, gps=gps))
    assert found == PhotoExif(lens="Canon RF35mm F1.8", focal_mm=35.0, iso=800)


def test_lens_focal_length_and_iso() -> None:
    assert round_trip(exif_for(lens=("Sony", "Sony FE 24-70mm"), focal=R(507, 10), iso=(3200, 100))) == PhotoExif(
        lens="Sony FE 24-70mm", focal_mm=50.7, iso=3200
    )  # the lens make is not repeated; the first ISO is the setting
    assert round_trip(exif_for(lens=("", "XF23mmF2"), focal=R(0, 0), iso=0)) == PhotoExif(lens="XF23mmF2")
    assert round_trip(exif_for(focal=R(-5, 1))) == PhotoExif()
    assert round_trip(Image.Exif()) == PhotoExif()
    assert read_file_exif(b"/no/such/file.jpg") is None


# -- parsing filters ---------------------------------------------------------------------------


def test_parse_reads_ranges_places_and_flags() -> None:
    flt = SearchFilter.parse(camera=" canon ", lens="24-70", focal="24..70", iso="..800", near="48.8584, 2.2945",
                             within="800m", has_gps="1", tag=["red", " red", "", "circle"])  # fmt: skip
    assert flt == SearchFilter(
        camera="canon", lens="24-70", focal_mm=(24.0, 70.0), iso=(None, 800.0), near=Place(48.8584, 2.2945, 0.8),
        has_gps=True, tags=("red", "circle"),
    )
    assert SearchFilter.parse(focal="35", iso="1600..", near="-33.9,151.2") == SearchFilter(
        focal_mm=(35.0, 35.0), iso=(1600.0, None), near=Place(-33.9, 151.2, 5.0)
    )
    assert SearchFilter.parse(within="", near="", has_gps=False, tag=[]) == SearchFilter()


@pytest.mark.parametrize(
    ("params", "name", "expected"),
    [
        ({"focal": "70..24"}, "focal", "a range MIN..MAX"),
        ({"iso": "high"}, "iso", "a range MIN..MAX"),
        ({"iso": ".."}, "iso", "a range MIN..MAX"),
        ({"near": "91,0"}, "near", "a position LAT,LON"),
        ({"near": "paris"}, "near", "a position LAT,LON"),
        ({"near": "1,2", "within": "5 miles"}, "within", "a distance"),
        ({"within": "5km"}, "within", "used with near"),
        ({"has_gps": "maybe"}, "has_gps", "true or false"),
    ],
)
def test_a_bad_value_names_its_filter(params: dict[str, str], name: str, expected: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        SearchFilter.parse(**params)  # type: ignore[arg-type]
    assert caught.value.name == name and caught.value.expected.startswith(expected)


def test_haversine_distances() -> None:
    degree = 6371.0088 * math.pi / 180  # one degree of a great circle on the mean-radius sphere
    assert haversine_km(0, 0, 1, 0) == pytest.approx(degree, rel=1e-12)
    assert haversine_km(0, 179.5, 0, -179.5) == pytest.approx(degree, rel=1e-12)  # across ±180°
    assert haversine_km(89.5, 0, 89.5, 180) == pytest.approx(degree, rel=1e-12)  # over the pole
    p1, p2, dl = math.radians(48.8584), math.radians(48.8058), math.radians(2.1275 - 2.2945)
    cosines = 6371.0088 * math.acos(math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl))
    assert haversine_km(48.8584, 2.2945, 48.8058, 2.1275) == pytest.approx(cosines, rel=1e-9)


# -- a library with cameras, lenses and places -------------------------------------------------


PHOTOS = {  # name: (camera, lens, focal, iso, gps, taken)
    "paris1.jpg": (("Canon", "Canon EOS R6"), ("Canon", "RF24-105mm F4L"), R(24, 1), 100, PARIS, "2021:06:01 10:00:00"),
    "paris2.jpg": (("Canon", "Canon EOS R6"), ("Canon", "RF24-105mm F4L"), R(105, 1), 3200, PARIS, "2022:06:01 10:00:00"),
    "versailles.jpg": (("SONY", "ILCE-7M3"), ("Sony", "FE 35mm F1.8"), R(35, 1), 400, VERSAILLES, "2021:06:02 10:00:00"),
    "sydney.jpg": (("Apple", "iPhone 13"), ("Apple", "iPhone 13 back camera 5.1mm f/1.6"), R(51, 10), 50, SYDNEY, None),
    "lima.jpg": (("FUJIFILM", "X-T4"), None, R(23, 1), 6400, LIMA, "2021:07:01 10:00:00"),
    "fiji_e.jpg": (None, None, None, None, FIJI_EAST, None),
    "fiji_w.jpg": (None, None, None, None, FIJI_WEST, None),
    "nogps.jpg": (("Canon", "Canon EOS 5D"), None, R(50, 1), 200, None, "2021:06:03 10:00:00"),
    "broken_gps.jpg": (None, None, None, None, ("N", (R(48, 0), R(1, 1), R(1, 1)), "E", PARIS[3]), None),
    "plain.png": None,
}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Library, Path]]:
    folder = tmp_path_factory.mktemp("exif")
    root = folder / "photos"
    for seed, (name, spec) in enumerate(PHOTOS.items()):
        if spec is None:
            make_photo(root / name, seed=seed)
            continue
        camera, lens, focal, iso, gps, taken = spec
        make_photo(root / name, seed=seed, exif=exif_for(camera, lens, focal, iso, gps, taken))
    lib = Library.open(folder / "lib")
    lib.index([root], model=TINY)
    yield lib, root
    lib.close()


def names(lib: Library, flt: SearchFilter) -> list[str]:
    """The photos passing `flt`: the catalog's SQL, and a search that ranks only them."""
    ids = lib.catalog.filter_ids("image", flt).tolist()
    found = sorted(Path(row.path or "").name for row in lib.catalog.items(ids).values())
    ranked = sorted(Path(r.path).name for r in lib.search("a photo", top=20, filters=flt))  # type: ignore[union-attr]
    assert ranked == found
    return found


def test_camera_and_lens_are_case_insensitive_substrings(library: tuple[Library, Path]) -> None:
    lib, _ = library
    assert names(lib, SearchFilter.parse(camera="canon")) == ["nogps.jpg", "paris1.jpg", "paris2.jpg"]
    assert names(lib, SearchFilter.parse(camera="eos r6")) == ["paris1.jpg", "paris2.jpg"]
    assert names(lib, SearchFilter.parse(camera="sony ilce")) == ["versailles.jpg"]  # make and model together
    assert names(lib, SearchFilter.parse(lens="sony fe")) == ["versailles.jpg"]
    assert names(lib, SearchFilter.parse(lens="f4l")) == ["paris1.jpg", "paris2.jpg"]
    assert names(lib, SearchFilter.parse(camera="100%")) == []  # % and _ are literal
    assert names(lib, SearchFilter.parse(lens="_")) == []


def test_focal_and_iso_ranges_are_inclusive(library: tuple[Library, Path]) -> None:
    lib, _ = library
    assert names(lib, SearchFilter.parse(focal="24..50")) == ["nogps.jpg", "paris1.jpg", "versailles.jpg"]  # lima: 23
    assert names(lib, SearchFilter.parse(focal="..10")) == ["sydney.jpg"]
    assert names(lib, SearchFilter.parse(focal="105")) == ["paris2.jpg"]
    assert names(lib, SearchFilter.parse(iso="3200..")) == ["lima.jpg", "paris2.jpg"]
    assert names(lib, SearchFilter.parse(iso="100..400", focal="30..")) == ["nogps.jpg", "versailles.jpg"]


def test_near_within_and_has_gps(library: tuple[Library, Path]) -> None:
    lib, _ = library
    assert names(lib, SearchFilter.parse(near="48.8584,2.2945")) == ["paris1.jpg", "paris2.jpg"]  # 5 km by default
    assert names(lib, SearchFilter.parse(near="48.8584,2.2945", within="20km")) == [
        "paris1.jpg", "paris2.jpg", "versailles.jpg"]  # fmt: skip
    assert names(lib, SearchFilter.parse(near="-33.86,151.21", within="1km")) == ["sydney.jpg"]
    assert names(lib, SearchFilter.parse(near="-12.04,-77.04", within="2km")) == ["lima.jpg"]  # south and west
    assert names(lib, SearchFilter.parse(near="33.86,151.21", within="1000km")) == []  # the sign matters
    assert names(lib, SearchFilter.parse(near="-17,180", within="10km")) == ["fiji_e.jpg", "fiji_w.jpg"]  # ±180°
    assert names(lib, SearchFilter.parse(near="90,0", within="5000km")) == [
        "paris1.jpg", "paris2.jpg", "versailles.jpg"]  # a pole inside the circle  # fmt: skip
    assert names(lib, SearchFilter.parse(has_gps=True)) == sorted(
        ["fiji_e.jpg", "fiji_w.jpg", "lima.jpg", "paris1.jpg", "paris2.jpg", "sydney.jpg", "versailles.jpg"])


def test_exif_filters_combine_with_dates(library: tuple[Library, Path]) -> None:
    lib, _ = library
    june_2021 = {"after": "2021-06-01", "before": "2021-07-01"}
    assert names(lib, SearchFilter.parse(camera="canon", **june_2021)) == ["nogps.jpg", "paris1.jpg"]
    assert names(lib, SearchFilter.parse(near="48.8584,2.2945", within="20km", **june_2021)) == [
        "paris1.jpg", "versailles.jpg"]  # fmt: skip
    assert names(lib, SearchFilter.parse(has_gps=True, iso="1000..", after="2021-06-15")) == ["lima.jpg", "paris2.jpg"]


def test_cli_flags_and_json(library: tuple[Library, Path]) -> None:
    lib, _ = library
    args = ["search", "a photo", "--library", str(lib.home), "--json", "--camera", "CANON", "--focal", "20..30",
            "--near", "48.8584,2.2945", "--within", "1km", "--after", "2021-01-01"]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    [hit] = json.loads(out.stdout)
    assert {k: hit[k] for k in ("camera", "lens", "focal_mm", "iso", "lat", "lon", "tags")} == {
        "camera": "Canon EOS R6", "lens": "Canon RF24-105mm F4L", "focal_mm": 24.0, "iso": 100,
        "lat": 48.8584, "lon": 2.2945, "tags": [],
    }
    assert Path(hit["path"]).name == "paris1.jpg"
    assert hit["taken_at"].startswith("2021-06-01T10:00:00")
    bad = CliRunner().invoke(app, ["search", "x", "--library", str(lib.home), "--iso", "lots"])
    assert bad.exit_code != 0 and "--iso 'lots' is not a range MIN..MAX" in bad.output


def test_http_returns_positions_only_when_asked_and_thumbnails_have_no_exif(library: tuple[Library, Path]) -> None:
    lib, _ = library
    client = client_for(lib)
    params = {"q": "a photo", "camera": "canon", "has_gps": "1", "focal": "..50"}
    [hit] = client.get("/api/v1/search", params=params).json()["results"]
    assert Path(hit["path"]).name == "paris1.jpg"
    assert (hit["lat"], hit["lon"], hit["lens"], hit["iso"]) == (None, None, "Canon RF24-105mm F4L", 100)
    [hit] = client.get("/api/v1/search", params={**params, "gps": "1"}).json()["results"]
    assert (hit["lat"], hit["lon"]) == (48.8584, 2.2945)
    near = client.get("/api/v1/search", params={"q": "a photo", "near": "-33.86,151.21", "within": "1km"}).json()
    assert [Path(h["path"]).name for h in near["results"]] == ["sydney.jpg"]
    bad = client.get("/api/v1/search", params={"q": "a photo", "near": "south"})
    assert bad.status_code in (400, 422) and "near 'south' is not a position" in bad.text
    thumb = client.get(hit["thumbnail_url"])
    assert thumb.status_code == 200
    with Image.open(io.BytesIO(thumb.content)) as img:
        assert dict(img.getexif()) == {} and img.getexif().get_ifd(0x8825) == {}


def test_files_indexed_before_get_the_fields_on_the_next_index_without_re_encoding(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_photo(root / "a.jpg", seed=1, exif=exif_for(lens=("Canon", "RF50mm"), iso=200, gps=LIMA))
    make_photo(root / "b.jpg", seed=2)
    with Library.open(tmp_path / "lib") as lib:
        lib.index([root], model=TINY)
    con = sqlite3.connect(tmp_path / "lib" / "catalog.db")  # as revision 0002 left them: the columns are new
    con.execute("UPDATE items SET lens = NULL, iso = NULL, gps_lat = NULL, gps_lon = NULL, exif_version = NULL")
    con.commit()
    con.close()
    with Library.open(tmp_path / "lib") as lib:
        assert names(lib, SearchFilter(has_gps=True)) == []
        report = lib.index()
        assert (report.encoded, report.added, report.updated, report.exif_read) == (0, 0, 0, 2)
        assert names(lib, SearchFilter.parse(has_gps=True, lens="rf50", iso="200")) == ["a.jpg"]
        assert lib.index().exif_read == 0  # read once


def test_dates_still_come_from_exif(library: tuple[Library, Path]) -> None:
    lib, _ = library
    flt = SearchFilter.parse(before="2021-06-02")
    assert names(lib, SearchFilter(after=datetime(2021, 6, 1).timestamp(), before=flt.before)) == ["paris1.jpg"]


# -- the SQL on every backend, against a reference in Python ------------------------------------


POINTS = [  # (camera, lens, focal, iso, lat, lon)
    ("Canon EOS R6", "Canon RF24-105mm", 24.0, 100, 48.8584, 2.2945),
    ("canon eos 5d", None, 105.0, 3200, -33.8587, 151.2142),
    ("SONY ILCE-7M3", "Sony FE 35mm_F1.8", 35.0, 400, -12.0433, -77.04),
    ("Apple iPhone 13", "100% crop lens", 5.1, 50, -17.0, 179.98),
    (None, None, None, None, -17.0, -179.98),
    (None, None, None, None, 89.99, 10.0),
    (None, None, None, None, None, None),
]
FILTERS = [
    SearchFilter.parse(camera="canon"), SearchFilter.parse(camera="EOS"), SearchFilter.parse(lens="_f1"),
    SearchFilter.parse(lens="100%"), SearchFilter.parse(focal="24..35"), SearchFilter.parse(iso="..400"),
    SearchFilter.parse(near="-17,180", within="10km"), SearchFilter.parse(near="90,0", within="100km"),
    SearchFilter.parse(near="-33.86,151.21", within="1km"), SearchFilter.parse(has_gps=True),
    SearchFilter.parse(tag=["sea"]), SearchFilter.parse(tag=["sea", "2021"]),
    SearchFilter.parse(camera="canon", iso="1000..", tag=["sea"]),
]


def test_the_sql_of_every_new_filter_matches_a_python_reference(tmp_path: Path, backend: str | None) -> None:
    from indexer.catalog import Catalog, FileRecord, WriteBatch
    from indexer.catalog_tags import ItemTags, TagTarget
    from indexer.decode import ImageInfo

    cat = Catalog(backend or f"sqlite:///{tmp_path / 'catalog.db'}")
    records = [
        FileRecord(f"/p/{n}.jpg".encode(), 10, 10**9, f"{n:064x}",
                   ImageInfo(4, 3, None, camera, 1, PhotoExif(lens, focal, iso, lat, lon)))
        for n, (camera, lens, focal, iso, lat, lon) in enumerate(POINTS)
    ]  # fmt: skip
    ids = cat.write(WriteBatch(records=records))
    labels = {ids[0]: ("sea", "2021"), ids[1]: ("sea",), ids[2]: ("2021",)}
    model = cat.ensure_model("fp", "m", None, None, 4)
    cat.write_tags(model.id, "k", [ItemTags(TagTarget(i, "", ""), tuple((lab, 1.0) for lab in labs)) for i, labs in labels.items()])

    def holds(n: int, flt: SearchFilter) -> bool:
        camera, lens, focal, iso, lat, lon = POINTS[n]
        return (
            (flt.camera is None or (camera is not None and flt.camera.lower() in camera.lower()))
            and (flt.lens is None or (lens is not None and flt.lens.lower() in lens.lower()))
            and all(rng is None or (v is not None and (rng[0] is None or v >= rng[0]) and (rng[1] is None or v <= rng[1]))
                    for rng, v in ((flt.focal_mm, focal), (flt.iso, iso)))
            and (flt.near is None or (lat is not None and lon is not None and flt.near.holds(lat, lon)))
            and (not flt.has_gps or lat is not None)
            and all(t in labels.get(ids[n], ()) for t in flt.tags)
        )  # fmt: skip

    for flt in FILTERS:
        want = sorted(ids[n] for n in range(len(POINTS)) if holds(n, flt))
        assert sorted(cat.filter_ids("image", flt).tolist()) == want, flt
    assert [len(cat.filter_ids("image", f)) for f in FILTERS] == [2, 2, 1, 1, 2, 3, 2, 1, 1, 6, 2, 1, 1]
    cat.close()
