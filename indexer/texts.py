"""Read a text collection from .txt, .csv/.tsv or .jsonl files."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from indexer.errors import InputFileError


@dataclass
class TextFile:
    texts: list[str] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def read_texts(path: Path) -> TextFile:
    """Texts from a file, one per line or row; bad rows are reported, not fatal.

    Raises InputFileError when the file cannot be read at all.
    """
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".csv", ".tsv", ".jsonl"):
        raise InputFileError(f"{path}: texts come from .txt, .csv, .tsv or .jsonl files")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # newline="": a CR inside a quoted field stays
            content = f.read()
    except FileNotFoundError:
        raise InputFileError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"cannot read {path}: {e}") from None
    out = TextFile()
    if suffix == ".txt":
        out.texts = [line.strip() for line in _lines(content) if line.strip()]
    elif suffix == ".jsonl":
        _read_jsonl(content, out)
    else:
        _read_table(path, content, "\t" if suffix == ".tsv" else ",", out)
    return out


def _lines(content: str) -> list[str]:
    """Lines as files end them (\n, \r\n, \r). str.splitlines also splits at form feeds,
    U+2028 and other characters that JSON strings and captions may hold."""
    return content.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _read_jsonl(content: str, out: TextFile) -> None:
    for n, line in enumerate(_lines(content), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            out.problems.append((n, f"not JSON: {e.msg}"))
            continue
        value = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(value, str) or not value.strip():
            out.problems.append((n, 'no "text" string'))
            continue
        out.texts.append(value.strip())


def _read_table(path: Path, content: str, delimiter: str, out: TextFile) -> None:
    # A file object, not a list of lines: a quoted field may span lines and keeps its newlines.
    reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as e:
        raise InputFileError(f"cannot read the header row of {path} ({e})") from None
    if fieldnames is None or "text" not in fieldnames:
        found = ", ".join(fieldnames or []) or "none"
        raise InputFileError(f"{path} has no 'text' column (columns: {found})")
    line = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # a field over csv.field_size_limit(): this row only, the reader goes on
            out.problems.append((line + 1, f"unreadable row ({e})"))
            line = reader.line_num
            continue
        line = reader.line_num
        value = row.get("text")
        if not isinstance(value, str) or not value.strip():
            out.problems.append((reader.line_num, "empty text"))
            continue
        out.texts.append(value.strip())
