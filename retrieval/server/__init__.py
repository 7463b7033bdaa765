"""`clipdex serve`: a web page and an HTTP API over a Library.

    from retrieval.server import ServerSettings, create_app, serve
    serve(ServerSettings(port=8000), "~/clipdex")
"""

from retrieval.server.app import create_app
from retrieval.server.run import serve
from retrieval.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]
