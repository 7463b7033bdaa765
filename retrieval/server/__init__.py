"""`clipdex serve`: a web page and an HTTP API over a Library.

    from retrieval.server import ServerSettings, create_app, serve
    serve(ServerSettings(port=8000), "~/clipdex")
"""

import os

# A server shares its machine. Idle OpenMP threads (torch's and faiss's each have a pool)
# should sleep rather than spin: on a busy 2-core CPU spinning made warm queries several
# times slower (benchmarks/server_latency.py). Takes effect when this module is imported
# before torch and faiss, as under `clipdex serve`; an explicit setting wins.
SERVE_OMP_WAIT_POLICY: str | None = "PASSIVE"
if SERVE_OMP_WAIT_POLICY is not None:
    os.environ.setdefault("OMP_WAIT_POLICY", SERVE_OMP_WAIT_POLICY)

from retrieval.server.app import create_app  # noqa: E402
from retrieval.server.run import serve  # noqa: E402
from retrieval.server.settings import ServerSettings  # noqa: E402

__all__ = ["SERVE_OMP_WAIT_POLICY", "ServerSettings", "create_app", "serve"]
