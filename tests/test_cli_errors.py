"""Bad settings and bad input files end in one `error:` line (or a skipped row), never a
traceback, never a password, and never at the cost of what the library already holds."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.render import shown
from conftest import make_photo

runner = CliRunner()
PASSWORD = "S3CRETPW"
TITLE = "\x1b]0;pwned\x07"
BIG = "x" * 200_000  # over csv.field_size_limit() (131,072)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exit_code != 0:
        assert isinstance(result.exception, SystemExit), result.exception  # an error line, not a traceback
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def one_item_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library holding one imported image vector."""
    work = tmp_path_factory.mktemp("one-item")
    np.save(work / "v.npy", np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32))
    (work / "items.txt").write_text("/x/kept.jpg\n")
    home = work / "lib"
    code, _, err = run("import", str(work / "v.npy"), "--items", str(work / "items.txt"), "--model", "clipdex-tiny", "--library", str(home))
    assert code == 0, err
    return home


@pytest.fixture
def library_with_one_item(one_item_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`one_item_home` as this test's CLIPDEX_HOME; returns its config.json, restored afterwards."""
    monkeypatch.setenv("CLIPDEX_HOME", str(one_item_home))
    config = one_item_home / "config.json"
    saved = config.read_text()
    yield config
    config.write_text(saved)


def assert_still_holds_its_item(config: Path, before: str) -> None:
    assert config.read_text() == before
    code, out, err = run("status", "--json")
    assert code == 0, err
    assert json.loads(out)["images"] == 1


@pytest.mark.parametrize(
    "db, shown_as",
    [("not a url", "'not a url'"), (5, "a JSON int"), (["sqlite:///x.db"], "a JSON list"),
     (f"postgresql+psycopg://alice:{PASSWORD}@db.example:notaport/clipdex", "'postgresql+psycopg://***@db.example:notaport/clipdex'")],
    ids=["not-a-url", "number", "list", "bad-port-with-password"],
)
def test_a_bad_db_in_config_json_is_one_error_line(library_with_one_item: Path, db: object, shown_as: str) -> None:
    config = library_with_one_item
    good = config.read_text()
    config.write_text(json.dumps(json.loads(good) | {"db": db}))
    before = config.read_text()
    code, out, err = run("status")
    assert code == 1 and out == ""
    assert err == (
        f"error: {config}: its db setting ({shown_as}) is not a database URL such as "
        "postgresql+psycopg://USER@HOST/DB; fix it, or remove it to use the catalog.db inside the library\n"
    )
    assert config.read_text() == before
    config.write_text(good)
    assert_still_holds_its_item(config, good)


@pytest.mark.parametrize(
    "db, message",
    [
        ("not a url", "error: 'not a url' is not a database URL; write it as sqlite:///PATH/catalog.db or "),
        ("foo://host/db", "error: the catalog URL foo://host/db names a backend SQLAlchemy does not know (foo); "),
        (f"postgresql+psycopg://alice:{PASSWORD}@127.0.0.1:1/clipdex",  # nothing listens on port 1: refused at once
         "error: cannot open the catalog at postgresql+psycopg://alice:***@127.0.0.1:1/clipdex: connection failed"),
    ],
    ids=["not-a-url", "unknown-backend", "password"],
)
def test_a_bad_db_option_is_one_error_line_and_is_not_remembered(library_with_one_item: Path, db: str, message: str) -> None:
    before = library_with_one_item.read_text()
    code, out, err = run("status", "--db", db)
    assert code == 1 and out == ""
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert PASSWORD not in err
    assert_still_holds_its_item(library_with_one_item, before)


def test_a_missing_driver_names_its_package_and_hides_the_password(library_with_one_item: Path) -> None:
    if importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("mysqlclient is installed here")
    before = library_with_one_item.read_text()
    code, _, err = run("status", "--db", f"mysql://alice:{PASSWORD}@localhost/clipdex")
    assert code == 1
    assert err == (
        "error: the catalog mysql://alice:***@localhost/clipdex needs the database driver MySQLdb, which is not "
        "installed: pip install 'mysqlclient' (or name an installed driver in the URL, as in postgresql+psycopg://)\n"
    )
    assert_still_holds_its_item(library_with_one_item, before)


def test_a_huge_csv_field_skips_its_row_in_a_texts_file(tmp_path: Path, library_with_one_item: Path) -> None:
    texts = tmp_path / "texts.csv"
    with open(texts, "w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], [1, "a red car"], [2, BIG], [3, "a blue boat"]])
    code, out, err = run("add-texts", str(texts), "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "added": 2, "duplicates": 0, "encoded": 2,
        "problems": [{"line": 3, "reason": "unreadable row (field larger than field limit (131072))"}],
    }
    assert err == f"warning: {texts}:3: unreadable row (field larger than field limit (131072)); row skipped\n"


def test_a_huge_csv_field_skips_its_row_in_a_pairs_file(tmp_path: Path) -> None:
    for i in range(3):
        make_photo(tmp_path / f"{i}.jpg", seed=i)
    pairs = tmp_path / f"pairs{TITLE}.csv"
    with open(pairs, "w", newline="") as f:
        csv.writer(f).writerows([["image", "caption"], ["0.jpg", "zero"], ["1.jpg", BIG], ["1.jpg", "one"], ["2.jpg", "two"]])
    code, out, err = run("eval", str(pairs), "--model", "clipdex-tiny", "--json")
    assert code == 0, err
    assert json.loads(out)["pairs"] == 3
    assert err == f"warning: {shown(pairs)}:3: unreadable row (field larger than field limit (131072)); skipped\n"
