"""Precomputed embeddings: reading them (a .npy matrix with a list of items, or a parquet
table) and checking them before anything is written.

A bad row rejects the whole import, naming the first bad row: a NaN, an infinity or
an all-zero vector would otherwise replace a good vector and hide its photo for good.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from indexer.errors import InputFileError, ItemsListNeeded, UnknownEmbeddingFormat

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_CHECK_ROWS = 8192  # rows checked at a time in float64: bounds the extra memory of a large import (~50 MB at D=768)


def read_embeddings(path: Path, items_path: Path | None, kind: str) -> tuple[list[str], np.ndarray]:
    """(items, (N, D) real-number vectors in the file's own dtype) from `path`.

    A `.npy` file needs `items_path`: one image path or text per line, in row order.
    A `.parquet` file holds a `path` (or, for texts, `text`) column of strings and an
    `embedding` column of equal-length lists of numbers. Raises InputFileError when
    they do not fit; the values themselves are checked by `unit_rows`.
    """
    if path.suffix == ".npy":
        return _read_npy(path, items_path, kind)
    if path.suffix == ".parquet":
        return _read_parquet(path, kind)
    raise UnknownEmbeddingFormat(str(path))


def unit_rows(items: Sequence[object], vectors: Any, kind: str) -> np.ndarray:
    """The vectors L2-normalised as (N, D) float32, after checking every row and item.

    Raises InputFileError naming the first bad row (counting from 0): items and rows
    that do not pair up, an empty item, a NaN or infinite value, a value beyond float32,
    an all-zero vector. Nothing is half-accepted: one bad row rejects them all.
    """
    _check_items(items, kind)
    vecs = _as_real_matrix(vectors)
    if vecs.ndim != 2 or len(vecs) != len(items):
        raise InputFileError(f"got {len(items)} items but vectors of shape {vecs.shape}; they must pair up row by row")
    out = np.empty(vecs.shape, dtype=np.float32)  # (N, D)
    for start in range(0, len(vecs), _CHECK_ROWS):
        out[start : start + _CHECK_ROWS] = _normalised(vecs[start : start + _CHECK_ROWS], start, items)
    return out


def _normalised(chunk: np.ndarray, start: int, items: Sequence[object]) -> np.ndarray:
    """One chunk of rows, checked, scaled by its largest value (so no square overflows or
    underflows) and divided by its norm in float64."""
    bad = ~np.isfinite(chunk)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputFileError(f"{_row(start + r, items)} holds {chunk[r, c]} at column {c}; nothing was imported")
    v = chunk.astype(np.float64)  # (n, D)
    largest = np.abs(v).max(axis=1) if v.shape[1] else np.zeros(len(v))  # (n,)
    if len(v) and float(largest.max()) > _FLOAT32_MAX:
        r = int(np.argmax(largest > _FLOAT32_MAX))
        raise InputFileError(
            f"{_row(start + r, items)} holds {largest[r]:g}, beyond the float32 range of stored vectors; nothing was imported"
        )
    if len(v) and float(largest.min()) == 0.0:
        r = int(np.argmin(largest))
        raise InputFileError(f"{_row(start + r, items)} is all zeros; nothing was imported")
    v /= largest[:, None]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def _row(n: int, items: Sequence[object]) -> str:
    item = str(items[n])
    shown = item if len(item) <= 80 else item[:77] + "..."
    return f"row {n} (counting from 0: {shown!r})"


def _check_items(items: Sequence[object], kind: str) -> None:
    what = "text" if kind == "text" else "path"
    for n, item in enumerate(items):
        if not isinstance(item, str):
            raise InputFileError(f"item {n} (counting from 0) is {type(item).__name__}, not a {what}")
        if not item.strip():
            raise InputFileError(f"item {n} (counting from 0) is an empty {what}")
        if "\x00" in item:
            raise InputFileError(f"{_row(n, items)} holds a NUL character, which no {what} can")


def _as_real_matrix(vectors: Any) -> np.ndarray:
    """`vectors` as a numpy array of real numbers (bool, int or float), without copying a good one."""
    try:
        vecs = np.asarray(vectors)
    except (ValueError, TypeError) as e:
        raise InputFileError(f"the vectors are not a matrix of numbers ({e})") from None
    _check_dtype(vecs.dtype, "the vectors")
    return vecs


def _check_dtype(dtype: np.dtype[Any], what: str) -> None:
    if dtype.kind == "c":
        raise InputFileError(
            f"{what} are complex numbers ({dtype}); embeddings are real: keep the real part yourself if that is meant"
        )
    if dtype.kind not in "biuf":
        raise InputFileError(f"{what} hold {dtype} values, not numbers")


def _column(kind: str) -> str:
    return "text" if kind == "text" else "path"


def _read_npy(path: Path, items_path: Path | None, kind: str) -> tuple[list[str], np.ndarray]:
    if items_path is None:
        raise ItemsListNeeded(str(path), _column(kind))
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputFileError(f"cannot read {path}: {e}") from None
    if not isinstance(vectors, np.ndarray):  # an .npz archive renamed .npy
        raise InputFileError(f"{path} is not a .npy array")
    _check_dtype(vectors.dtype, f"the vectors in {path}")
    try:
        lines = items_path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as e:
        raise InputFileError(f"cannot read {items_path}: {e}") from None
    return [line for line in lines if line.strip()], vectors


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
    items = _string_column(path, table.column(col).combine_chunks(), col)
    return items, _number_lists(path, table.column("embedding").combine_chunks())


def _string_column(path: Path, column: Any, name: str) -> list[str]:
    import pyarrow as pa

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise InputFileError(f"{path}: column '{name}' holds {column.type}, not strings")
    if column.null_count:
        raise InputFileError(f"{path}: row {_first_null(column)} (counting from 0) has no {name} (null)")
    return [str(v) for v in column.to_pylist()]


def _number_lists(path: Path, column: Any) -> np.ndarray:
    """The `embedding` column as an (N, D) array: every row a list of D numbers, none null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = column.type
    is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    numeric = is_list and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))
    if not numeric:
        what = f"lists of {t.value_type}" if is_list else str(t)
        raise InputFileError(f"{path}: column 'embedding' holds {what}, not lists of numbers")
    if column.null_count:
        raise InputFileError(f"{path}: row {_first_null(column)} (counting from 0) has no embedding (null)")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)  # (N,)
    dim = int(lengths[0]) if len(lengths) else 0
    if len(lengths) and (lengths != dim).any():
        r = int(np.argmax(lengths != dim))
        raise InputFileError(f"{path}: row {r} (counting from 0) has {lengths[r]} values, row 0 has {dim}")
    values = column.flatten()
    if values.null_count:
        r = _first_null(values) // max(dim, 1)
        raise InputFileError(f"{path}: row {r} (counting from 0) has a null value in its embedding")
    return values.to_numpy(zero_copy_only=False).reshape(len(column), dim)


def _first_null(column: Any) -> int:
    return int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
