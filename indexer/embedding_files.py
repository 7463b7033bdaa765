"""Read precomputed embeddings: a .npy matrix with a list of items, or a parquet table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexer.errors import InputFileError


def read_embeddings(path: Path, items_path: Path | None, kind: str) -> tuple[list[str], np.ndarray]:
    """(items, (N, D) float32 vectors) from `path`.

    A `.npy` file needs `items_path`: one image path or text per line, in row order.
    A `.parquet` file holds a `path` (or, for texts, `text`) column and an `embedding`
    column of equal-length float lists. Raises InputFileError when they do not fit.
    """
    if path.suffix == ".npy":
        if items_path is None:
            raise InputFileError(f"{path}: a .npy file needs --items LIST (one {_column(kind)} per line, in row order)")
        try:
            vectors = np.load(path, allow_pickle=False)
            lines = items_path.read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError) as e:
            raise InputFileError(f"cannot read {path} or {items_path}: {e}") from None
        return [line for line in lines if line.strip()], np.asarray(vectors, dtype=np.float32)
    if path.suffix == ".parquet":
        return _read_parquet(path, kind)
    raise InputFileError(f"{path}: embeddings come as .npy (with --items) or .parquet")


def _column(kind: str) -> str:
    return "text" if kind == "text" else "path"


def _read_parquet(path: Path, kind: str) -> tuple[list[str], np.ndarray]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputFileError("reading parquet needs pyarrow: pip install 'clipdex[parquet]'") from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise InputFileError(f"cannot read {path}: {e}") from None
    col = _column(kind)
    if col not in table.column_names or "embedding" not in table.column_names:
        raise InputFileError(f"{path} needs columns '{col}' and 'embedding' (has: {', '.join(table.column_names)})")
    items = [str(v) for v in table.column(col).to_pylist()]
    vectors = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    return items, vectors
