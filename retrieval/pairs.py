"""Read image–caption pairs from CSV/TSV, JSONL, or a folder of images with sidecar .txt files.

Image paths are relative to the pairs file (or to the folder). A bad row never
stops the read (not even a CSV field over `csv.field_size_limit()`): it is reported
as a `Problem` with its file and line number and skipped. Whether each image decodes is checked later, when the pairs are loaded.
"""

from __future__ import annotations

import csv
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

from indexer.errors import InputFileError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Pair:
    image: Path  # absolute
    caption: str
    source: str  # the file the pair was read from
    line: int  # 1-based line in `source`


@dataclass(frozen=True)
class Problem:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass
class PairFile:
    """The pairs read from one file or folder, and the rows that were skipped."""

    source: Path
    pairs: list[Pair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_pairs(path: str | os.PathLike[str]) -> PairFile:
    """Read pairs by the file's suffix (.csv, .tsv, .jsonl) or from a folder; raise InputFileError."""
    source = Path(path).expanduser().resolve()
    if source.is_dir():
        return _read_folder(source)
    if not source.is_file():
        raise InputFileError(f"pairs file {path} does not exist")
    suffix = source.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_table(source, "\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(source)
    raise InputFileError(f"pairs file {path} must be .csv, .tsv or .jsonl, or a folder of images with .txt captions")


def _read_table(source: Path, delimiter: str) -> PairFile:
    out = PairFile(source)
    with _open_text(source) as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
        except csv.Error as e:
            raise InputFileError(f"cannot read the header row of {source} ({e})") from None
        if "image" not in header or "caption" not in header:
            raise InputFileError(f"{source} needs a header row with 'image' and 'caption' columns (found {header})")
        col_image, col_caption = header.index("image"), header.index("caption")
        line = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:  # a field over csv.field_size_limit(): this row only, the reader goes on
                out.problems.append(Problem(str(source), line + 1, f"unreadable row ({e})"))
                line = reader.line_num
                continue
            first, line = line + 1, reader.line_num  # a quoted field may span lines
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(col_image, col_caption):
                out.problems.append(Problem(str(source), first, f"expected {len(header)} columns, found {len(row)}"))
                continue
            _add(out, row[col_image], row[col_caption], source.parent, first)
    return out


def _read_jsonl(source: Path) -> PairFile:
    out = PairFile(source)
    with _open_text(source) as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                out.problems.append(Problem(str(source), n, f"not valid JSON ({e.msg})"))
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("image"), str):
                out.problems.append(Problem(str(source), n, "needs an object with an 'image' string"))
                continue
            captions = obj.get("caption")
            captions = captions if isinstance(captions, list) else [captions]
            for caption in captions:
                if not isinstance(caption, str):
                    out.problems.append(Problem(str(source), n, "'caption' must be a string or a list of strings"))
                    break
                _add(out, obj["image"], caption, source.parent, n)
    return out


def _read_folder(folder: Path) -> PairFile:
    """Each image `x.jpg` with a sidecar `x.txt` holding one caption per line."""
    out = PairFile(folder)
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        sidecar = image.with_suffix(".txt")
        if not sidecar.is_file():
            out.problems.append(Problem(str(image), 0, f"no caption file {sidecar.name}"))
            continue
        with _open_text(sidecar) as f:
            for n, text in enumerate(f, start=1):
                if text.strip():
                    out.pairs.append(Pair(image, text.strip(), str(sidecar), n))
    return out


def _add(out: PairFile, image: str, caption: str, base: Path, line: int) -> None:
    image, caption = image.strip(), caption.strip()
    if not image:
        out.problems.append(Problem(str(out.source), line, "empty image path"))
    elif not caption:
        out.problems.append(Problem(str(out.source), line, "empty caption"))
    else:
        path = (base / Path(image).expanduser()).resolve()
        if not path.is_file():
            out.problems.append(Problem(str(out.source), line, f"image {image} does not exist"))
        else:
            out.pairs.append(Pair(path, caption, str(out.source), line))


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    """Open a text file as UTF-8 (with or without BOM); OS and encoding errors become InputFileError."""
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise InputFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        yield f
    except UnicodeDecodeError as e:
        raise InputFileError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    finally:
        f.close()
