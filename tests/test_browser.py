"""End to end in a real headless Chromium: a `clipdex serve` process, driven like a person would.

Uses Debian's chromium (/usr/bin/chromium) through Playwright's Python package; browser
downloads are impossible here. Outside CI the tests skip when either is missing; with
CI=true that is a failure. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import TINY
from retrieval.library import Library
from scenes import write_scenes

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PHOTOS = 80  # more than one page (60) of results, so scrolling loads a second page
TEXTS = ["a sunset over the sea", "snowy mountain peaks", "a city skyline at night", "a pine forest",
         "sand dunes in the desert", "a birthday party"]
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def _require_browser() -> None:
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright's Python package is not installed (pip install -e '.[dev]')"
    if reason is None and not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run in CI: {reason}")
        pytest.skip(reason)


@dataclass
class Server:
    url: str
    api: httpx.Client
    photos: list[Path]
    home: Path

    def ids(self, route: str, **params: Any) -> list[int]:
        return [h["id"] for h in self.api.get(route, params=params).raise_for_status().json()["results"]]

    def upload_ids(self, data: bytes, **form: Any) -> list[Any]:
        r = self.api.post("/api/v1/search/image", files={"file": ("q.jpg", data, "image/jpeg")}, data=form)
        return [h["id"] if "path" in h else h["text"] for h in r.raise_for_status().json()["results"]]

    def id_of(self, photo: Path) -> int:
        hits = self.api.get("/api/v1/search", params={"q": "x", "top": 500}).json()["results"]
        return next(h["id"] for h in hits if h["path"] == str(photo))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clipdex_command() -> list[str]:
    entry = Path(sys.executable).parent / "clipdex"
    return [str(entry)] if entry.exists() else [sys.executable, "-c", "from cli.app import main; main()"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_browser()
    folder = tmp_path_factory.mktemp("browser")
    photos = write_scenes(folder / "photos", PHOTOS)
    with Library.open(folder / "lib") as lib:
        lib.index([folder / "photos"], model=TINY)
        lib.add_texts(TEXTS)
        lib.tag(folder_tags=True)  # YEAR and THEME chips on every tile
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CLIPDEX_TOKEN" and not k.startswith("PYTEST")}
    env |= {"CLIPDEX_HOME": str(folder / "lib"), "HF_HUB_OFFLINE": "1"}
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*_clipdex_command(), "serve", "--library", str(folder / "lib"), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=url, timeout=30)
    try:
        _wait_until_serving(api, proc, folder / "serve.log")
        yield Server(url, api, photos, folder / "lib")
    finally:
        api.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_until_serving(api: httpx.Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180  # loading torch on a busy 2-core machine; not a speed check
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"clipdex serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if api.get("/api/v1/status").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"clipdex serve did not answer:\n{log.read_text()}")


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Tab:
    page: Any
    errors: list[str]

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{name}.png"))

    def tile_ids(self) -> list[int]:
        return [int(x) for x in self.page.eval_on_selector_all(".tile[data-id]", "ts => ts.map(t => t.dataset.id)")]

    def wait_tiles(self, count: int) -> None:
        self.page.wait_for_function(f"() => document.querySelectorAll('.tile[data-id]').length === {count}")

    def wait_first_tile(self, item: int) -> None:
        self.page.wait_for_function(f"() => document.querySelector('.tile[data-id]')?.dataset.id === '{item}'")

    def wait_thumbnails(self, n: int) -> None:
        loaded = "i => i.complete && i.naturalWidth > 0"
        self.page.wait_for_function(f"() => [...document.querySelectorAll('.tile img')].slice(0, {n}).every({loaded})")

    def search(self, text: str) -> None:
        self.page.fill("#q", text)
        self.page.press("#q", "Enter")


def _open(browser: Any, server: Server, viewport: dict[str, int]) -> Iterator[Tab]:
    context = browser.new_context(viewport=viewport, base_url=server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("/")
    yield Tab(page, errors)
    context.close()


@pytest.fixture
def tab(browser: Any, server: Server) -> Iterator[Tab]:
    yield from _open(browser, server, DESKTOP)


@pytest.fixture
def phone(browser: Any, server: Server) -> Iterator[Tab]:
    yield from _open(browser, server, PHONE)


def test_a_missing_browser_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="browser tests cannot run in CI: no Chromium at /nonexistent"):
        _require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium at /nonexistent/chromium"):
        _require_browser()


def test_type_a_query_see_thumbnails_open_the_viewer_and_close_it(tab: Tab, server: Server) -> None:
    page = tab.page
    assert page.inner_text("#state").startswith("Find any photo by describing it")
    tab.shot("desktop-welcome")
    tab.search("snowy mountains")
    tab.wait_tiles(60)
    want = server.api.get("/api/v1/search", params={"q": "snowy mountains", "top": 60}).json()["results"]
    assert tab.tile_ids() == [h["id"] for h in want]
    scores = page.eval_on_selector_all(".tile .score", "s => s.map(x => x.textContent)")
    assert scores == [f"{h['score']:.2f}" for h in want]
    assert page.inner_text("#summary") == "60+ photos for “snowy mountains”"
    tab.wait_thumbnails(14)
    tab.shot("desktop-search")

    page.click(".tile >> nth=1")
    page.wait_for_selector("#viewer", state="visible")
    hit = want[1]
    assert page.inner_text("#viewer-title") == Path(hit["path"]).name
    assert page.inner_text("#viewer-folder") == str(Path(hit["path"]).parent)
    page.wait_for_function("() => document.getElementById('viewer-img').src.endsWith('/image')")
    page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth === 640")
    item = server.api.get(f"/api/v1/items/{hit['id']}").json()
    page.wait_for_function(f"() => document.getElementById('viewer-meta').innerText.includes({item['camera']!r})")
    meta = page.inner_text("#viewer-meta")
    assert "640 × 480" in meta and "Taken" in meta and item["camera"] in meta
    tab.shot("desktop-viewer")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")
    assert tab.errors == []


def test_scrolling_loads_the_next_page(tab: Tab, server: Server) -> None:
    tab.search("a pine forest")
    tab.wait_tiles(60)
    tab.page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    tab.wait_tiles(PHOTOS)
    assert tab.tile_ids() == server.ids("/api/v1/search", q="a pine forest", top=PHOTOS)
    tab.page.wait_for_selector("#sentinel", state="hidden")
    assert tab.page.inner_text("#summary") == f"{PHOTOS} photos for “a pine forest”"
    assert tab.errors == []


def test_more_like_this_searches_by_the_open_photo(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.search("a city skyline at night")
    tab.wait_tiles(60)
    anchor = tab.tile_ids()[4]
    page.click(".tile >> nth=4")
    page.click("#more-like-this")
    page.wait_for_selector("#viewer", state="hidden")
    tab.wait_first_tile(anchor)
    tab.wait_tiles(60)
    assert tab.tile_ids() == server.ids(f"/api/v1/items/{anchor}/similar", top=60)
    assert page.inner_text("#query-chip-label").startswith("Like IMG_")
    assert f"similar={anchor}" in page.url
    tab.wait_thumbnails(14)
    tab.shot("desktop-more-like-this")
    assert tab.errors == []


def test_upload_a_photo_with_the_picker_and_by_dropping_it(tab: Tab, server: Server) -> None:
    page = tab.page
    photo = server.photos[7]
    page.set_input_files("#file", str(photo))
    tab.wait_first_tile(server.id_of(photo))
    tab.wait_tiles(60)
    assert tab.tile_ids() == server.upload_ids(photo.read_bytes(), top="60")
    assert page.inner_text("#query-chip-label") == photo.name
    assert page.inner_text("#summary").startswith(f"60+ photos like {photo.name}")
    tab.wait_thumbnails(14)
    tab.shot("desktop-upload")

    dropped = server.photos[12]
    page.evaluate(
        """async ([url, name]) => {
            const blob = await (await fetch(url)).blob();
            const dt = new DataTransfer();
            dt.items.add(new File([blob], name, {type: "image/jpeg"}));
            window.dispatchEvent(new DragEvent("dragenter", {dataTransfer: dt}));
            window.__overlay = !document.getElementById("drop-overlay").hidden;
            window.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, cancelable: true}));
        }""",
        [f"/api/v1/items/{server.id_of(dropped)}/image", dropped.name],
    )
    assert page.evaluate("window.__overlay") is True
    tab.wait_first_tile(server.id_of(dropped))
    assert tab.tile_ids() == server.upload_ids(dropped.read_bytes(), top="60")
    assert page.inner_text("#query-chip-label") == dropped.name
    assert page.is_hidden("#drop-overlay")
    assert tab.errors == []


def test_date_and_folder_filters_narrow_the_results(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.search("sand dunes in the desert")
    tab.wait_tiles(60)
    page.fill("#after", "2023-01-01")
    want = server.ids("/api/v1/search", q="sand dunes in the desert", top=60, after="2023-01-01")
    page.wait_for_function(f"() => document.querySelectorAll('.tile[data-id]').length === {len(want)}")
    assert tab.tile_ids() == want
    page.fill("#before", "2023-12-31")  # "To" is inclusive: the API gets before=2024-01-01
    want = server.ids("/api/v1/search", q="sand dunes in the desert", top=60, after="2023-01-01", before="2024-01-01")
    page.wait_for_function(f"() => document.querySelectorAll('.tile[data-id]').length === {len(want)}")
    assert tab.tile_ids() == want
    assert 0 < len(want) < PHOTOS
    assert page.inner_text("#filter-count") == "2"
    tab.wait_thumbnails(len(want))
    tab.shot("desktop-date-filter")

    page.fill("#folder", "2023/desert")
    page.press("#folder", "Enter")
    want = server.ids("/api/v1/search", q="sand dunes in the desert", top=60, after="2023-01-01",
                      before="2024-01-01", path="2023/desert/*")
    page.wait_for_function(f"() => document.querySelectorAll('.tile[data-id]').length === {len(want)}")
    assert tab.tile_ids() == want
    page.click("#clear-filters")
    tab.wait_tiles(60)
    assert "from=" not in page.url
    assert tab.errors == []


def test_tag_chips_filter_by_their_tag_and_camera_and_gps_filters_narrow(tab: Tab, server: Server) -> None:
    page = tab.page
    query = "sand dunes in the desert"
    tab.search(query)
    tab.wait_tiles(60)
    first = server.api.get("/api/v1/search", params={"q": query, "top": 1}).json()["results"][0]
    chips = page.eval_on_selector_all(f".tile[data-id='{first['id']}'] .chip", "cs => cs.map(c => c.textContent)")
    assert chips == first["tags"] and len(chips) == 2  # its year and theme folders
    theme = chips[1] if not chips[1].isdigit() else chips[0]
    page.click(f".tile[data-id='{first['id']}'] .chip:text-is('{theme}')")
    want = server.ids("/api/v1/search", q=query, top=60, tag=theme)
    page.wait_for_function(f"() => document.querySelectorAll('.tile[data-id]').length === {len(want)}")
    assert tab.tile_ids() == want and 0 < len(want) < 60
    assert page.is_hidden("#viewer")  # the chip filtered; it did not open the photo
    assert page.input_value("#tag") == theme and f"tag={theme}" in page.url
    assert page.inner_text("#filter-count") == "1"
    tab.wait_thumbnails(len(want))
    tab.shot("desktop-tag-chip")

    page.fill("#camera", "CANON")
    page.press("#camera", "Enter")
    want = server.ids("/api/v1/search", q=query, top=60, tag=theme, camera="canon")
    page.wait_for_function(f"() => document.querySelectorAll('.tile[data-id]').length === {len(want)}")
    assert tab.tile_ids() == want and 0 < len(want)
    assert "camera=CANON" in page.url and page.inner_text("#filter-count") == "2"

    page.check("#has_gps")  # the generated photos carry no position
    page.wait_for_function("() => document.querySelectorAll('.tile[data-id]').length === 0")
    assert server.ids("/api/v1/search", q=query, top=60, has_gps="true") == []
    page.click("#clear-filters")
    tab.wait_tiles(60)
    assert "tag=" not in page.url and not page.is_checked("#has_gps")

    page.goto("/?q=desert&near=48.85,2.29&within=800m&focal=24..70&iso=..800")  # filters come back from the URL
    assert [page.input_value(f"#{i}") for i in ("near", "within", "focal", "iso")] == ["48.85,2.29", "800m", "24..70", "..800"]
    assert tab.errors == []


def test_tag_filter_suggests_the_librarys_tags_from_the_tags_endpoint(tab: Tab, server: Server) -> None:
    page = tab.page
    listed = server.api.get("/api/v1/tags").json()["tags"]
    assert len(listed) > 2  # the folder tags: years and themes
    page.wait_for_function(f"() => document.querySelectorAll('#tag-list option').length === {len(listed)}")
    options = page.eval_on_selector_all("#tag-list option", "os => os.map(o => [o.value, o.label])")
    assert options == [[t["label"], f"{t['label']} ({t['count']})"] for t in listed]
    assert page.get_attribute("#tag", "list") == "tag-list"
    assert tab.errors == []


def test_texts_toggle_finds_the_texts_that_describe_a_photo(tab: Tab, server: Server) -> None:
    page = tab.page
    page.click("#mode-texts")
    photo = server.photos[3]
    page.set_input_files("#file", str(photo))
    page.wait_for_function(f"() => document.querySelectorAll('.text-result').length === {len(TEXTS)}")
    shown = page.eval_on_selector_all(".text-result .text", "ts => ts.map(t => t.textContent)")
    assert shown == server.upload_ids(photo.read_bytes(), texts="true", top="60")
    assert page.is_disabled("#after")  # filters apply to photos only
    tab.shot("desktop-texts")
    assert tab.errors == []


def test_loading_state_shows_while_a_search_is_in_flight(tab: Tab) -> None:
    page = tab.page
    held: list[Any] = []
    page.route("**/api/v1/search?*", lambda route: held.append(route))  # held until the state is checked
    tab.search("a quiet street")
    page.wait_for_selector(".tile.skeleton")
    assert page.get_attribute("#main", "aria-busy") == "true"
    assert page.inner_text("#summary") == "Searching…"
    tab.shot("desktop-loading")
    held[0].continue_()
    tab.wait_tiles(60)
    assert page.query_selector(".tile.skeleton") is None
    assert page.get_attribute("#main", "aria-busy") == "false"
    assert tab.errors == []


def test_empty_and_error_states_are_visible(tab: Tab) -> None:
    page = tab.page
    page.fill("#folder", "no/such/folder")
    page.press("#folder", "Enter")
    tab.search("a birthday party")
    page.wait_for_selector(".state.empty")
    assert page.inner_text("#state").startswith("No photos match")
    tab.shot("desktop-empty")
    page.click(".state .retry")  # "Clear filters"
    tab.wait_tiles(60)

    tab.search("item:999999")
    page.wait_for_selector(".state.error")
    assert page.inner_text(".state h2") == "That search did not work"
    assert page.inner_text(".state p") == "item 999999 is not in the library"
    tab.shot("desktop-error")
    assert tab.errors == ["Failed to load resource: the server responded with a status of 404 (Not Found)"]


def test_phone_layout_fits_the_screen(phone: Tab, server: Server) -> None:
    page = phone.page
    phone.shot("phone-welcome")
    phone.search("a sunset over the sea")
    phone.wait_tiles(60)
    phone.wait_thumbnails(15)
    assert page.evaluate("document.documentElement.scrollWidth") == PHONE["width"]
    assert page.eval_on_selector(".tile", "t => t.getBoundingClientRect().width") < PHONE["width"] / 3
    phone.shot("phone-search")
    page.click(".tile >> nth=0")
    page.wait_for_function("() => document.getElementById('viewer-img').src.endsWith('/image')")
    phone.shot("phone-viewer")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")
    assert page.is_hidden("#after")
    page.click("#filters-toggle")
    assert page.is_visible("#after")
    phone.shot("phone-filters")
    assert phone.errors == []


def test_photos_indexed_by_another_process_appear_without_restart(tab: Tab, server: Server, tmp_path: Path) -> None:
    """Runs last: it grows the library. The writer is this test process; the server is another."""
    write_scenes(tmp_path / "new", 5)
    answers: list[int] = []

    def index() -> None:
        with Library.open(server.home) as lib:
            lib.index([tmp_path / "new"], model=TINY)

    writer = threading.Thread(target=index)
    writer.start()
    while True:  # the server keeps answering while the other process writes
        answers.append(server.api.get("/api/v1/search", params={"q": "a pine forest"}).status_code)
        if not writer.is_alive():
            break
    writer.join()
    assert set(answers) == {200}
    new_ids = {server.id_of(p) for p in sorted((tmp_path / "new").rglob("*.jpg"))}
    assert len(new_ids) == 5 and len(server.ids("/api/v1/search", q="x", top=500)) == PHOTOS + 5
    tab.page.reload()
    info = f"{PHOTOS + 5} photos · 6 texts"
    tab.page.wait_for_function(f"() => document.getElementById('library-info').textContent === '{info}'")
    assert tab.errors == []


def test_duplicates_show_as_stacks_and_collapse_leaves_keepers(tab: Tab, server: Server, tmp_path: Path) -> None:
    """Runs after the library has grown: adds a copy, a re-encode and a burst shot of one new photo."""
    from duplicate_sets import write_set

    write_set(tmp_path / "dups", 1, first_seed=77)
    with Library.open(server.home) as lib:
        lib.index([tmp_path / "dups"], model=TINY)
    report = server.api.get("/api/v1/duplicates").json()
    ours = [g for g in report["groups"] if g["members"][0]["path"].startswith(str(tmp_path / "dups"))]
    assert [len(g["members"]) for g in ours] == [13, 2]  # day one (copies, near copies, bursts); the next day
    page = tab.page
    page.reload()
    page.click("#show-duplicates")
    page.wait_for_function(f"() => document.querySelectorAll('.dup-group').length === {len(report['groups'])}")
    shown = page.eval_on_selector_all(
        ".dup-group", "gs => gs.map(g => [...g.querySelectorAll('.dup-member')].map(m => Number(m.dataset.id)))"
    )
    assert shown == [[m["id"] for m in g["members"]] for g in report["groups"]]
    first = page.query_selector(f".dup-group[data-keeper='{ours[0]['keeper']['id']}']")
    assert first.query_selector(".dup-member").get_attribute("class") == "dup-member keeper"
    assert "Keep s77-pixels.png" in first.inner_text()
    first.scroll_into_view_if_needed()
    tab.shot("desktop-duplicates")

    page.check("#collapse")  # on a desktop the filter fields are always shown
    tab.search("a sunny beach")
    want = server.ids("/api/v1/search", q="a sunny beach", top=60, collapse="true")
    page.wait_for_function(f"() => document.querySelectorAll('.tile[data-id]').length === {len(want)}")
    assert tab.tile_ids() == want
    hidden = {m["id"] for g in report["groups"] for m in g["members"][1:]}
    assert not set(want) & hidden
    assert tab.errors == []


def test_saved_models_show_their_before_after_table_and_run_chart(tab: Tab, server: Server) -> None:
    from saved_model_kit import save_tuned_model

    result = save_tuned_model(server.home, "shapes-tuned")
    try:
        page = tab.page
        page.reload()
        page.wait_for_selector("#saved-models", state="visible")
        assert page.inner_text("#saved-models-count") == "1"
        page.click("#saved-models > summary")
        page.wait_for_selector('.saved-model[data-name="shapes-tuned"]', state="visible")
        assert page.inner_text(".saved-model h3") == "shapes-tuned"
        facts = page.inner_text(".saved-model-facts")
        rate = f"{result.card['lr_search']['lr']:.1e}".replace("e-0", "e-")  # as JavaScript's toExponential(1) writes it
        assert facts.startswith(f"from clipdex-tiny · learning rate {rate} (auto) · 4 steps, stopped by step cap · ")
        rows = page.eval_on_selector_all(".metrics-table tr", "rs => rs.map(r => [...r.children].map(c => c.textContent))")
        metrics = result.card["metrics"]
        want = [["", "base", "tuned"]] + [
            [f"{label} R@{k}", f"{metrics['base'][key][f'R@{k}']:.3f}", f"{metrics['tuned'][key][f'R@{k}']:.3f}"]
            for label, key in (("text→image", "text_to_image"), ("image→text", "image_to_text")) for k in (1, 5, 10)
        ]  # fmt: skip
        assert rows == want
        loaded = "i => i && i.complete && i.naturalWidth === 640 && i.src.endsWith('/api/v1/saved-models/shapes-tuned/chart')"
        page.wait_for_function(f"() => ({loaded})(document.querySelector('.saved-model img.run-chart'))")
        assert page.eval_on_selector_all(".saved-model svg", "s => s.length") == 0  # the chart is an image, not inline SVG
        tab.shot("desktop-saved-models")
        assert tab.errors == []
    finally:
        for suffix in (".safetensors", ".json", ".svg"):
            result.weights.with_suffix(suffix).unlink(missing_ok=True)
