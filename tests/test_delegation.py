"""`clipdex search` sends its query to a running `clipdex serve` over the same library, else searches itself.

A real `clipdex serve` subprocess (with a token) serves a tiny-model library; `clipdex search`
runs as a fresh interpreter. That a search was delegated is shown by what the CLI process
imported: the local path must import numpy, SQLAlchemy and FAISS to open the catalog and
the index; a delegated one imports none of them. Fallbacks are shown by a trap socket
that records whether anything connected to it, and by the results being right.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

import retrieval.delegation
from cli.app import app
from conftest import env_without_pytest
from export_kit import ROOT, cli_program, exported_library, imported, run_program
from retrieval.library import Library
from retrieval.server_record import FILENAME, ServerRecord, live_record, read_record, remove_record, write_record

TOKEN = "delegation-test-token-0123456789"
HEAVY = ("numpy", "sqlalchemy", "faiss", "torch", "open_clip")
CLI = cli_program(HEAVY)


@dataclasses.dataclass
class Served:
    home: Path
    photos: Path
    record: ServerRecord


def run_cli(home: Path, *args: str, token: str | None = TOKEN) -> tuple[str, list[str]]:
    """(stdout, heavy modules imported) of a cold `clipdex` process; fails on a non-zero exit."""
    done = run_program(CLI, home, *args, env={} if token is None else {"CLIPDEX_TOKEN": token}, drop=("CLIPDEX_TOKEN",))
    assert done.returncode == 0, done.stderr
    return done.stdout, imported(done.stderr)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A tiny-model library (text tower exported) served by `clipdex serve --token` in a subprocess."""
    base = tmp_path_factory.mktemp("delegation")
    home = exported_library(base)
    env = {**env_without_pytest(), "CLIPDEX_HOME": str(home), "PYTHONPATH": str(ROOT), "CLIPDEX_TOKEN": TOKEN}
    env.pop("CLIPDEX_NO_EXPORT", None)
    serve = "import sys\nfrom cli.app import main\nsys.argv = ['clipdex', *sys.argv[1:]]\nmain()\n"
    proc = subprocess.Popen([sys.executable, "-c", serve, "serve", "--port", str(free_port())], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while (record := read_record(home)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "clipdex serve did not start"
            time.sleep(0.2)
        yield Served(home, base / "photos", record)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert read_record(home) is None, "a server that stopped cleanly removes its record"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def trap() -> Iterator[socket.socket]:
    """A listening socket that never answers: whoever connects waits."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        yield s


def connections(trap: socket.socket) -> int:
    n = 0
    while True:
        try:
            trap.accept()[0].close()
        except BlockingIOError:
            return n
        n += 1


def test_the_server_records_itself(served: Served) -> None:
    record = served.record
    assert record.token_required is True and record.model is None and record.pid > 0
    assert record.url.startswith("http://127.0.0.1:")
    assert live_record(served.home) == record


@pytest.mark.parametrize("args", [["a dog", "--top", "4"], ["item:2", "--top", "3", "--json"],
                                  ["kids at the beach", "--add", "0.5:sand", "--sub", "item:3", "--json"]])
def test_a_delegated_search_prints_what_the_local_one_prints(
    served: Served, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    remote, heavy = run_cli(served.home, "search", *args)
    assert heavy == []  # neither the catalog nor the index was opened here: the server answered
    monkeypatch.delenv("CLIPDEX_NO_EXPORT")  # the exported text tower, as the server and a user's CLI
    monkeypatch.setenv("CLIPDEX_HOME", str(served.home))
    local = CliRunner().invoke(app, ["search", *args, "--local"])
    assert local.exit_code == 0, local.stderr
    assert remote == local.stdout and remote.strip()


def test_a_photo_query_is_uploaded(served: Served) -> None:
    photo = served.photos / "p5.jpg"
    remote, heavy = run_cli(served.home, "search", str(photo), "--top", "3", "--json")
    assert heavy == []
    with Library.open(served.home) as lib:  # the precision the server (and the local CLI) chose
        want = lib.search(str(photo), top=3)
    got = json.loads(remote)
    assert [g["id"] for g in got] == [w.id for w in want]
    assert all(abs(float(g["score"]) - w.score) < 1e-4 for g, w in zip(got, want))
    assert got[0]["path"] == str(photo) and set(got[0]) == set(want[0].to_dict())


def test_a_token_server_is_used_only_with_the_token(served: Served) -> None:
    for token in (None, "not-the-token-but-just-as-long"):  # no token: not even asked; a wrong one: refused
        out, heavy = run_cli(served.home, "search", "item:2", "--top", "2", token=token)
        assert "sqlalchemy" in heavy
        assert out.splitlines()[0].startswith("1.0000  ")


def test_stale_foreign_and_silent_servers_are_ignored(served: Served, trap: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPDEX_HOME", str(served.home))
    monkeypatch.setenv("CLIPDEX_TOKEN", TOKEN)
    monkeypatch.setattr(retrieval.delegation, "ANSWER_TIMEOUT_S", 0.5)
    dead = subprocess.Popen(["true"])
    dead.wait()
    at_trap = dataclasses.replace(served.record, url=f"http://127.0.0.1:{trap.getsockname()[1]}/", pid=os.getpid())
    want = CliRunner().invoke(app, ["search", "item:2", "--top", "3", "--local"]).stdout
    cases = {
        "a server that is gone": (dataclasses.replace(at_trap, pid=dead.pid), 0),
        "a server of another catalog": (dataclasses.replace(at_trap, catalog_id="0" * 32), 0),
        "a server of another machine": (dataclasses.replace(at_trap, machine="elsewhere"), 0),
        "a server that does not answer": (at_trap, 1),
    }
    try:
        for case, (record, connected) in cases.items():
            write_record(served.home, record)
            result = CliRunner().invoke(app, ["search", "item:2", "--top", "3"])
            assert (result.exit_code, result.stdout) == (0, want), case
            assert connections(trap) == connected, case
        closed = free_port()  # nothing listens there: refused at once
        write_record(served.home, dataclasses.replace(at_trap, url=f"http://127.0.0.1:{closed}/"))
        assert CliRunner().invoke(app, ["search", "item:2", "--top", "3"]).stdout == want
    finally:
        write_record(served.home, served.record)


@pytest.mark.parametrize("catalog", [None, "0" * 32])
def test_an_answer_from_another_catalog_is_not_used(
    served: Served, monkeypatch: pytest.MonkeyPatch, catalog: str | None
) -> None:
    """The record's pid was reused and another program (or another library's server) holds its port."""
    import http.server
    import threading

    asked: list[str] = []

    class Impostor(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps({"results": [{"id": 999, "path": "/not/yours.jpg", "score": 1.0}]}).encode()
            self.send_response(200)
            if catalog is not None:
                self.send_header("X-Clipdex-Catalog", catalog)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    monkeypatch.setenv("CLIPDEX_HOME", str(served.home))
    monkeypatch.setenv("CLIPDEX_TOKEN", TOKEN)
    want = CliRunner().invoke(app, ["search", "item:2", "--top", "3", "--local"]).stdout
    with http.server.HTTPServer(("127.0.0.1", 0), Impostor) as impostor:
        threading.Thread(target=impostor.serve_forever, daemon=True).start()
        try:
            write_record(served.home, dataclasses.replace(served.record, url=f"http://127.0.0.1:{impostor.server_port}/", pid=os.getpid()))
            result = CliRunner().invoke(app, ["search", "item:2", "--top", "3"])
        finally:
            write_record(served.home, served.record)
            impostor.shutdown()
    assert len(asked) == 1  # it was asked ...
    assert (result.exit_code, result.stdout) == (0, want)  # ... and its answer not used


def test_local_forces_the_local_path(served: Served, trap: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPDEX_HOME", str(served.home))
    monkeypatch.setenv("CLIPDEX_TOKEN", TOKEN)
    at_trap = dataclasses.replace(served.record, url=f"http://127.0.0.1:{trap.getsockname()[1]}/", pid=os.getpid())
    try:
        write_record(served.home, at_trap)
        for extra in (["--local"], ["--precision", "fp32"], ["--model", "clipdex-tiny"]):
            result = CliRunner().invoke(app, ["search", "item:2", "--top", "1", *extra])
            assert result.exit_code == 0 and result.stdout.startswith("1.0000  "), (extra, result.stderr)
        assert connections(trap) == 0
    finally:
        write_record(served.home, served.record)


def test_a_server_removes_only_its_own_record(tmp_path: Path) -> None:
    record = ServerRecord("http://127.0.0.1:9/", 12345, socket.gethostname(), "c" * 32, False, None)
    write_record(tmp_path, record)
    remove_record(tmp_path, 54321)  # another server's exit
    assert read_record(tmp_path) == record
    remove_record(tmp_path, 12345)
    assert not (tmp_path / FILENAME).exists()
    (tmp_path / FILENAME).write_text('{"version": 1, "url": 5}')
    assert read_record(tmp_path) is None
