"""clipdex's model side and public API: `Library`, `ModelSpec`, `SearchFilter`.

Exports load lazily, so `import retrieval.errors` stays cheap (no torch import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval.library import Library
    from indexer.model_spec import ModelSpec
    from retrieval.query import SearchFilter

__all__ = ["Library", "ModelSpec", "SearchFilter"]


def __getattr__(name: str) -> Any:
    if name == "Library":
        from retrieval.library import Library

        return Library
    if name == "ModelSpec":
        from indexer.model_spec import ModelSpec

        return ModelSpec
    if name == "SearchFilter":
        from retrieval.query import SearchFilter

        return SearchFilter
    raise AttributeError(name)
