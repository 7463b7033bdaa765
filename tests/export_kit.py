"""Shared by the tests of cold, warm and delegated searches and of the exported text towers:
a library whose index run exported its towers, the CLI run in a fresh interpreter that reports
what it imported, and the ways a derived file is damaged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest

from conftest import TINY, env_without_pytest, make_photo
from retrieval.library import Library

ROOT = Path(__file__).resolve().parent.parent
MARK = "IMPORTED="


def exported_library(base: Path, photos: int = 8, texts: Sequence[str] = ()) -> Path:
    """`photos` generated photos (and `texts`) indexed with clipdex-tiny, exports on: the index run
    exports the text tower and quantises it. Returns the library's home."""
    for i in range(photos):
        make_photo(base / "photos" / f"p{i}.jpg", seed=i)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CLIPDEX_NO_EXPORT", raising=False)
        with Library.open(base / "lib") as lib:
            lib.index([base / "photos"], model=TINY)
            if texts:
                lib.add_texts(list(texts))
    return base / "lib"


def cli_program(tracked: Sequence[str] = ("torch", "open_clip"), prelude: str = "") -> str:
    """A program for `python -c`: `prelude`, then clipdex's own main on the arguments; at exit, whatever
    the exit code, it prints MARK and which of `tracked` modules it imported to stderr."""
    return (
        prelude + "import sys\n"
        "from cli.app import main\n"
        "sys.argv = ['clipdex', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        f"    print({MARK!r} + ','.join(m for m in {tuple(tracked)!r} if m in sys.modules), file=sys.stderr)\n"
    )


def run_program(
    program: str, home: Path, *args: str, env: dict[str, str] | None = None, drop: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """`program` in a fresh interpreter over the library at `home`, exports on (as a user's CLI),
    without the variables named in `drop`, with those in `env`."""
    base = {**env_without_pytest(), "CLIPDEX_HOME": str(home), "PYTHONPATH": str(ROOT)}
    for name in ("CLIPDEX_NO_EXPORT", *drop):
        base.pop(name, None)
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=ROOT, timeout=300)  # fmt: skip


def imported(stderr: str) -> list[str]:
    """The tracked modules a `cli_program` run imported, from its stderr."""
    line = [x for x in stderr.splitlines() if x.startswith(MARK)][-1]
    return [m for m in line.removeprefix(MARK).split(",") if m]


def damages(entry: Path, name: str) -> tuple[Callable[[], None], ...]:
    """Three ways the derived file `name` (".onnx" with its ".data") in `entry` goes bad: deleted,
    truncated, and its tag naming another model."""

    def delete() -> None:
        (entry / f"{name}.onnx").unlink()

    def truncate() -> None:
        with open(entry / f"{name}.onnx.data", "r+b") as f:
            f.truncate(1000)

    def foreign() -> None:
        tag = entry / f"{name}.tag.json"
        data = json.loads(tag.read_text())
        data["fingerprint"] = "clipdex-tiny@00000000000000000000"
        tag.write_text(json.dumps(data))

    return delete, truncate, foreign
