"""The CLI as a user runs it: JSON shapes, one-line errors, help text, the entry point."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from cli.app import app
from conftest import env_without_pytest, make_photo

runner = CliRunner()
README = Path(__file__).resolve().parent.parent / "README.md"


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def indexed(photos: Path) -> Path:
    code, out, err = run("index", str(photos), "--model", "clipdex-tiny", "--json")
    assert code == 0, err
    return photos


def test_index_json_summary(photos: Path) -> None:
    code, out, err = run("index", str(photos), "--model", "clipdex-tiny", "--json")
    assert code == 0
    summary = json.loads(out)
    assert set(summary) == {"added", "updated", "removed", "renamed", "skipped", "encoded", "exif_read", "seconds", "missing_roots"}
    assert {k: summary[k] for k in ("added", "skipped", "encoded")} == {"added": 12, "skipped": 1, "encoded": 12}
    assert "clipdex status --errors" not in out  # notes go to stderr, data to stdout
    code, out, _ = run("index", "--json")
    assert json.loads(out)["encoded"] == 0


def test_search_json_shapes(indexed: Path, tmp_path: Path) -> None:
    code, out, err = run("search", "a beach", "--top", "3", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert len(results) == 3
    assert all(set(r) == {"id", "path", "score", "width", "height", "taken_at", "camera", "lens", "focal_mm", "iso", "lat", "lon", "tags"} for r in results)
    assert results[0]["width"] == 160 and results[0]["height"] == 120 and results[0]["taken_at"] is None
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"text": "a cat"}\n{"nope": 1}\n{"text": "a dog"}\n')
    code, out, err = run("add-texts", str(texts), "--json")
    assert code == 0
    assert json.loads(out) == {"added": 2, "duplicates": 0, "encoded": 2, "problems": [{"line": 2, "reason": 'no "text" string'}]}
    assert f"{texts}:2" in err
    code, out, _ = run("search", str(indexed / "trip" / "beach0.jpg"), "--texts", "--json")
    assert [set(r) for r in json.loads(out)] == [{"id", "text", "score"}] * 2


def test_image_query_by_path_and_forced_image_mode(indexed: Path) -> None:
    target = indexed / "home" / "cat9.png"
    code, out, _ = run("search", str(target), "--top", "1", "--json")
    assert json.loads(out)[0]["path"] == str(target)
    code, out, err = run("search", "--image", "no-such.jpg")
    assert code == 1 and err.strip() == "error: image no-such.jpg does not exist"


def test_status_json_has_the_documented_fields(indexed: Path) -> None:
    code, out, _ = run("status", "--json", "--errors")
    st = json.loads(out)
    assert {"images", "texts", "skipped", "roots", "active_model", "models", "index"} <= set(st)
    assert (st["images"], st["texts"], st["skipped"]) == (12, 0, 1)
    assert st["roots"] == [{"path": str(indexed), "exists": True}]
    assert st["index"]["type"] == "flat" and st["index"]["vectors"] == 12 and st["index"]["in_sync"] is True
    assert st["errors"] == [{"path": str(indexed / "home" / "broken.jpg"), "reason": "not a supported image format"}]
    assert st["active_model"].startswith("clipdex-tiny@")
    code, out, _ = run("status", "--errors")
    assert "broken.jpg: not a supported image format" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "/no/such/folder", "--model", "clipdex-tiny"], "error: /no/such/folder does not exist"),
        (["index", "--model", "ViT-Nope"], "error: unknown model 'ViT-Nope'; `clipdex models` lists the available ones"),
        (["index", "--checkpoint", "x.pt"], "error: --checkpoint needs --model ARCH"),
        (["search", "x", "--after", "yesterday"], "error: --after 'yesterday' is not an ISO 8601 date"),
        (["search", "0:beach"], "error: weight in '0:beach' must be a positive number"),
        (["search", "beach"], "error: the library is empty; run `clipdex index PATH` first"),
        (["search", "beach", "--model", "clipdex-tiny"],
         "error: the library has no vectors from clipdex-tiny; run `clipdex index --model clipdex-tiny` first"),
        (["forget", "/nowhere"], "error: /nowhere is not a root of this library"),
        (["add-texts", "missing.txt"], "error: missing.txt does not exist"),
        (["search", "x", "--precision", "fp8"], "error: --precision 'fp8' is not one of auto, fp32, bf16, int8, fp16"),
    ],
)
def test_user_errors_are_one_clear_line(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code == 1
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_flag_values_are_usage_errors_without_traceback() -> None:
    code, out, err = run("search", "x", "--sort", "colour")
    assert code == 2 and "Invalid value for '--sort'" in err and "Traceback" not in err


def registered_commands() -> list[str]:
    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", registered_commands())
def test_every_command_has_help_and_is_in_the_readme(name: str) -> None:
    code, out, _ = run(name, "--help")
    assert code == 0
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    assert command.help and len(command.help) > 20
    assert re.search(rf"`clipdex {re.escape(name)}\b", README.read_text()), f"README does not document clipdex {name}"


def test_installed_entry_point_indexes_and_searches(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "pics" / "one.jpg", seed=3)
    exe = str(Path(sys.executable).with_name("clipdex"))
    env = env_without_pytest() | {"CLIPDEX_HOME": str(tmp_path / "home")}
    done = subprocess.run([exe, "index", str(photo.parent), "--model", "clipdex-tiny"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("added 1, updated 0, removed 0, renamed 0, skipped 0, encoded 1 in ")
    found = subprocess.run([exe, "search", str(photo), "--json"], env=env, capture_output=True, text=True)
    assert json.loads(found.stdout)[0]["path"] == str(photo)
