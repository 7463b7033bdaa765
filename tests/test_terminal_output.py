"""File names, texts and messages reach the terminal escaped: a hostile name cannot clear
the screen, set the title, write the clipboard or reorder a line. JSON stays exact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.render import shown
from conftest import make_photo

runner = CliRunner()
CLEAR = "clear\x1b[2J.jpg"
TITLE = "title\x1b]0;pwned\x07.jpg"
CLIPBOARD = "clip\x1b]52;c;cm0gLXJmIH4=\x07.jpg"
C1 = "csi\x9b31m.png"
BIDI = "gpj.\u202eexe\u2066x\u2069\u200f.jpg"
LINES = "two\tcols\nand lines\r.jpg"
MARKUP = "[bold]loud[/bold].jpg"
NAMES = [CLEAR, TITLE, CLIPBOARD, C1, BIDI, LINES, MARKUP]
# What a terminal acts on: C0 (tab and newline too), DEL, C1, bidi marks, embeddings, overrides and isolates.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exit_code != 0:
        assert isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def assert_safe(text: str) -> None:
    lines = text.splitlines()
    bad = [line for line in lines if UNSAFE.search(line)]
    assert bad == [], bad


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder of photos with hostile names, one of them not an image, indexed with the tiny model:
    (the folder, the --library option value)."""
    root = tmp_path_factory.mktemp("hostile")
    for seed, name in enumerate(NAMES):
        make_photo(root / name, seed=seed)
    (root / f"broken{CLIPBOARD}").write_bytes(b"not a jpeg")
    home = str(root.parent / f"{root.name}-lib")
    code, _, err = run("index", str(root), "--model", "clipdex-tiny", "--library", home)
    assert code == 0, err
    return root, home


def test_shown_escapes_controls_and_bidi_and_nothing_else() -> None:
    assert shown(CLIPBOARD) == "clip\\x1b]52;c;cm0gLXJmIH4=\\x07.jpg"
    assert shown(BIDI) == "gpj.\\u202eexe\\u2066x\\u2069\\u200f.jpg"
    assert shown(LINES) == "two\\tcols\\nand lines\\r.jpg"
    assert shown("\x00\x7f\x85\u202a\u200e\udcff") == "\\x00\\x7f\\x85\\u202a\\u200e\\udcff"
    assert shown("café · 東京 [bold] \\x1b ✓") == "café · 東京 [bold] \\x1b ✓"


def test_search_lists_hostile_names_escaped_one_per_line(hostile: tuple[Path, str]) -> None:
    root, home = hostile
    code, out, err = run("search", "a photo", "--top", "20", "--library", home)
    assert code == 0, err
    assert_safe(out)
    assert len(out.splitlines()) == len(NAMES)
    listed = {line.split("  ", 1)[1] for line in out.splitlines()}
    assert listed == {str(root / shown(n)) for n in NAMES}
    assert str(root / "[bold]loud[/bold].jpg") in listed  # no markup is interpreted


def test_search_json_keeps_exact_names_and_no_raw_controls(hostile: tuple[Path, str]) -> None:
    root, home = hostile
    code, out, _ = run("search", "a photo", "--top", "20", "--json", "--library", home)
    assert code == 0
    assert {r["path"] for r in json.loads(out)} == {str(root / n) for n in NAMES}
    assert UNSAFE.search(out.replace("\n", "")) is None  # JSON escapes C0; \u escapes for C1 and bidi


def test_status_errors_escapes_names(hostile: tuple[Path, str]) -> None:
    root, home = hostile
    code, out, _ = run("status", "--errors", "--library", home)
    assert code == 0
    assert_safe(out)
    assert f"skipped   {root / shown('broken' + CLIPBOARD)}: not a supported image format" in out.splitlines()


def test_a_missing_root_note_escapes_its_name(tmp_path: Path) -> None:
    root = tmp_path / f"photos{TITLE}"
    make_photo(root / "one.jpg", seed=1)
    code, _, err = run("index", str(root), "--model", "clipdex-tiny")
    assert code == 0, err
    root.rename(tmp_path / "moved")
    code, _, err = run("index")
    assert code == 0
    assert_safe(err)
    assert f"warning: root {shown(root)} is missing (unmounted?); its items are kept" in err.splitlines()


def test_texts_and_error_messages_are_escaped(tmp_path: Path, hostile: tuple[Path, str]) -> None:
    root, home = hostile
    texts = tmp_path / f"texts{TITLE}.jsonl"
    texts.write_text(json.dumps({"text": f"a caption {CLIPBOARD} {BIDI}"}) + '\n{"nope": 1}\n')
    code, out, err = run("add-texts", str(texts), "--library", home)
    assert code == 0
    assert_safe(out + err)
    assert f"warning: {shown(texts)}:2: no \"text\" string; row skipped" in err.splitlines()
    code, out, _ = run("search", str(root / TITLE), "--texts", "--library", home)
    assert_safe(out)
    assert out.split("  ", 1)[1].strip() == shown(f"a caption {CLIPBOARD} {BIDI}")
    code, _, err = run("forget", str(tmp_path / CLEAR), "--library", home)
    assert code == 1
    assert_safe(err)
    assert err.startswith(f"error: {tmp_path / shown(CLEAR)} is not a root of this library")
    code, _, err = run("add-texts", str(tmp_path / f"no{BIDI}.txt"), "--library", home)
    assert code == 1 and err == f"error: {tmp_path / shown(f'no{BIDI}.txt')} does not exist\n"
