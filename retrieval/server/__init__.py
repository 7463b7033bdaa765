"""`clipdex serve`: a web page and an HTTP API over a Library.

    from retrieval.server import ServerSettings, create_app, serve
    serve(ServerSettings(port=8000), "~/clipdex")
"""

import os

# The OpenMP wait policy `clipdex serve` sets for torch's and FAISS's thread pools, unless
# OMP_WAIT_POLICY is set already: None leaves OpenMP's default (spin briefly, then sleep).
# benchmarks/server_latency.py runs PASSIVE and the default side by side: with text queries
# on the exported ONNX tower (no OpenMP), PASSIVE made text queries 1.13-1.77x and "more like
# this" 1.07-1.31x slower at p50 in three runs on a busy 2-core CPU, and photo queries no
# faster (0.96-1.08x), so it is not set (README, "Speed").
SERVE_OMP_WAIT_POLICY: str | None = None
if SERVE_OMP_WAIT_POLICY is not None:
    os.environ.setdefault("OMP_WAIT_POLICY", SERVE_OMP_WAIT_POLICY)

from retrieval.server.app import create_app  # noqa: E402
from retrieval.server.run import serve  # noqa: E402
from retrieval.server.settings import ServerSettings  # noqa: E402

__all__ = ["SERVE_OMP_WAIT_POLICY", "ServerSettings", "create_app", "serve"]
