"""What the Library API's calls return besides search results: `add_texts`, `import_embeddings`
and `status` reports, each with the dict its CLI `--json` prints."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AddTextsReport:
    added: int = 0
    duplicates: int = 0
    encoded: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "encoded": self.encoded,
            "problems": [{"line": n, "reason": r} for n, r in self.problems],
        }


@dataclass
class ImportReport:
    added: int
    replaced: int
    model: str

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class LibraryStatus:
    home: str
    images: int
    texts: int
    skipped: int
    roots: list[dict[str, object]]
    active_model: str | None
    models: list[dict[str, object]]
    index: dict[str, object]
    size_bytes: int
    errors: list[dict[str, str]] | None = None

    def to_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        if self.errors is None:
            d.pop("errors")
        return d


__all__ = ["AddTextsReport", "ImportReport", "LibraryStatus"]
