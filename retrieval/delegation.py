"""A `clipdex search` answered by the `clipdex serve` process over the same library, when one runs.

The server has the model, the catalog and the index loaded already, so asking it costs
a round trip on this machine instead of importing and opening them. `search_on_server`
reads LIBRARY/server.json (`retrieval.server_record`), sends the query to the server's
HTTP API (GET /api/v1/search for text and `item:ID` queries, POST /api/v1/search/image
for a photo), and returns the results as the CLI's `--json` dicts. It returns None, and
the caller searches locally, whenever the server cannot give the same answer for sure:
no live record, another catalog, a server with its own --model, a token the caller lacks,
a query the API does not take (image paths among the added terms, a weighted photo),
no connection within CONNECT_TIMEOUT_S, no answer within ANSWER_TIMEOUT_S, any answer
but 200 (a bad query is then reported by the local path, in the CLI's own words), or an
answer that does not name the record's catalog in X-Clipdex-Catalog (the pid in the
record was reused and something else listens on the port).

Standard library only, plus the cheap query parser: this runs before numpy, SQLAlchemy
or FAISS are imported, and a delegated search never imports them.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from indexer.errors import QueryError
from retrieval.query import parse_term
from retrieval.server_record import CATALOG_HEADER, ServerRecord, live_record

CONNECT_TIMEOUT_S = 0.3  # a server on this machine accepts at once, or is not there
ANSWER_TIMEOUT_S = 3.0  # a warm text search takes tens of ms; past this, a local search is the better bet
TOKEN_ENV = "CLIPDEX_TOKEN"  # what `clipdex serve --token` reads too
API = "/api/v1"
_LINKS = ("thumbnail_url", "image_url")  # the server's additions to a result: not CLI output


@dataclass(frozen=True)
class SearchRequest:
    """One `clipdex search`, as its options were given."""

    query: str
    force_image: bool = False
    add: tuple[str, ...] = ()
    sub: tuple[str, ...] = ()
    top: int = 10
    path: str | None = None
    after: str | None = None
    before: str | None = None
    min_score: float | None = None
    sort: str = "score"
    texts: bool = False
    extra: tuple[tuple[str, str], ...] = ()  # the other filters and switches, as the API names them

    def options(self) -> list[tuple[str, str]]:
        """The API's SearchOptions fields, as query-string or form pairs (lists repeated)."""
        pairs = [("top", str(self.top)), ("sort", self.sort), ("texts", "true" if self.texts else "false")]
        for name in ("path", "after", "before", "min_score"):
            value = getattr(self, name)
            if value is not None:
                pairs.append((name, repr(value) if isinstance(value, float) else str(value)))
        pairs += [("add", t) for t in self.add] + [("sub", t) for t in self.sub]
        return pairs + list(self.extra) + [("gps", "true")]  # the CLI prints positions; HTTP only when asked


def search_on_server(home: Path, request: SearchRequest) -> list[dict[str, object]] | None:
    """The running server's results for `request`, as `Result.to_dict()` gives them; None to search locally."""
    record = live_record(home)
    if record is None or record.model is not None:
        return None  # no server, or one answering for another model than the library's
    token = os.environ.get(TOKEN_ENV) or None
    if record.token_required and token is None:
        return None
    possible, photo = _photo(request)
    if not possible:
        return None
    try:
        if photo is None:
            target = f"{API}/search?" + urlencode([("q", request.query), *request.options()])
            status, catalog, body = _send(record, "GET", target, token, None, {})
        else:
            form, content_type = _multipart(request.options(), photo)
            status, catalog, body = _send(record, "POST", f"{API}/search/image", token, form, {"Content-Type": content_type})
        if status != 200 or catalog != record.catalog_id:
            return None  # (another catalog: whatever listens there now is not the server the record names)
        results = json.loads(body)["results"]
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        return None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        return None
    return [{k: v for k, v in r.items() if k not in _LINKS} for r in results]


def _photo(request: SearchRequest) -> tuple[bool, bytes | None]:
    """(whether the API can take the query, the photo's bytes for a photo query or None)."""
    try:
        main = parse_term(request.query, force="image" if request.force_image else None)
        others = [parse_term(t) for t in (*request.add, *request.sub)]
    except QueryError:
        return False, None  # the local path words the error
    if any(t.kind == "image" for t in others):
        return False, None  # the API reads no paths; it takes one upload
    if main.kind != "image":
        return True, None
    if main.weight != 1.0:
        return False, None  # an upload counts once
    try:
        with open(main.value, "rb") as f:
            return True, f.read()
    except OSError:
        return False, None


def _send(
    record: ServerRecord, method: str, target: str, token: str | None, body: bytes | None, headers: dict[str, str]
) -> tuple[int, str | None, bytes]:
    """(status, the catalog the answer names, body)."""
    url = urlsplit(record.url)
    if url.scheme != "http" or url.hostname is None or url.port is None:
        raise ValueError(f"not a server address: {record.url}")
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=CONNECT_TIMEOUT_S)
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(ANSWER_TIMEOUT_S)
        if record.token_required and token is not None:
            headers = {**headers, "Authorization": f"Bearer {token}"}
        conn.request(method, target, body=body, headers={**headers, "Accept": "application/json"})
        answer = conn.getresponse()
        return answer.status, answer.getheader(CATALOG_HEADER), answer.read()
    finally:
        conn.close()


def _multipart(fields: list[tuple[str, str]], photo: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body: the option fields, then the photo as `file`."""
    boundary = "clipdex-" + secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        for name, value in fields
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="query"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode() + photo + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
