"""`clipdex duplicates`: group a library's photos into exact copies, near copies and bursts.

Candidates come from the vectors' neighbours within a radius (indexer.neighbours), never
from all pairs; each candidate pair is then confirmed by the rule of its tier:
- exact: the same content hash, or the same dimensions and identical decoded pixels
  (checked only for pairs that agree on size, embedding and perceptual hash);
- near: the same photo re-encoded, resized, lightly cropped or stripped of EXIF: perceptual
  hashes a few bits apart and embeddings close; two files with different EXIF capture times
  are distinct shots, never near copies, and a near group never holds two capture times;
- burst: distinct shots whose EXIF capture times lie within the window and whose embeddings
  are close. A file without an EXIF capture time never joins a burst (mtime is not a capture time).
Tiers nest (exact within near within burst); a group is a connected set up to the tier asked
for. Each group names a keeper by one rule. Nothing here deletes or writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import numpy as np

from indexer.decode import path_str
from indexer.errors import QueryOptionError
from indexer.items import IMAGE, ModelRow
from indexer.image_hashes import hamming, perceptual_hash, pixel_digest
from indexer.neighbours import pairs_within
from retrieval.search import iso_time

if TYPE_CHECKING:
    from indexer.catalog import Catalog
    from indexer.catalog_lookups import PhotoFacts

Tier = Literal["exact", "near", "burst"]
TIERS: tuple[Tier, ...] = ("exact", "near", "burst")
KEEPER_RULE = "largest resolution, then largest file, then earliest date"


@dataclass(frozen=True)
class DuplicateConfig:
    """How `find_duplicates` groups; the similarities are inner products of unit vectors."""

    window_s: float = 10.0  # burst: capture times at most this far apart
    tier: Tier = "burst"  # group up to this tier (exact ⊂ near ⊂ burst)
    near_similarity: float = 0.95  # embeddings of a near (or exact) pair at least this close
    burst_similarity: float = 0.9  # embeddings of two shots of one burst at least this close
    near_max_bits: int = 10  # perceptual hashes of a near pair at most this many bits apart (of 64)
    exact_max_bits: int = 4  # pairs checked pixel by pixel: hashes at most this far apart

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise QueryOptionError("tier", self.tier, f"one of {', '.join(TIERS)}")
        if not 0 <= self.window_s < float("inf"):
            raise QueryOptionError("window_s", self.window_s, "a number of seconds, 0 or more")


@dataclass(frozen=True)
class Photo:
    """What grouping knows of one indexed photo."""

    id: int
    path: bytes  # the file, as stored
    display_path: str
    size: int | None
    width: int | None
    height: int | None
    taken_at: float | None  # EXIF capture time only
    date_key: float | None  # capture time, else mtime: for "earliest"
    content_hash: str | None


@dataclass(frozen=True)
class Member:
    """A photo in a group, and how it relates to the group's keeper."""

    id: int
    path: str
    size: int | None
    width: int | None
    height: int | None
    taken_at: str | None  # ISO 8601, from EXIF; None without
    match: str  # keeper | exact | near | burst

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are copies of each other or shots of one burst; `tier` is the loosest link in it."""

    tier: Tier
    keeper: int  # item id
    rule: str
    why: str
    members: tuple[Member, ...]  # the keeper, then its exact, near and burst matches

    def to_dict(self) -> dict[str, object]:
        return {
            "tier": self.tier,
            "keeper": {"id": self.keeper, "rule": self.rule, "why": self.why},
            "members": [m.to_dict() for m in self.members],
        }


@dataclass
class DuplicateReport:
    """Every group of a library (at most `config.tier`), largest first; `photos` were examined."""

    model: str
    photos: int
    window_s: float
    tier: Tier
    groups: list[DuplicateGroup] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "photos": self.photos,
            "window_s": self.window_s,
            "tier": self.tier,
            "groups": [g.to_dict() for g in self.groups],
        }

    def hidden_ids(self) -> set[int]:
        """Every member that is not its group's keeper: what `search --collapse` leaves out."""
        return {m.id for g in self.groups for m in g.members if m.id != g.keeper}


HashFn = Callable[[bytes], "int | None"]


DuplicateKey = tuple[str, int, DuplicateConfig, HashFn]  # (model fingerprint, catalog state, config, hash)


@dataclass
class DuplicateJob:
    """A grouping to run, read from the catalog (`Library.duplicates_job`); `cached`: its kept report."""

    key: DuplicateKey
    photos: list[Photo]
    vectors: np.ndarray  # (N, D) unit, aligned with photos
    config: DuplicateConfig
    model: str
    hash_fn: HashFn
    cached: DuplicateReport | None = None

    def run(self) -> DuplicateReport:
        """The grouping itself: the catalog is not touched."""
        return find_duplicates(self.photos, self.vectors, self.config, model=self.model, hash_fn=self.hash_fn)


def read_job(catalog: Catalog, row: ModelRow, key: DuplicateKey, config: DuplicateConfig, hash_fn: HashFn) -> DuplicateJob:
    """A grouping of the indexed photos `row`'s model has vectors for, read from the catalog."""
    ids, vectors = catalog.vectors(row.id, IMAGE)
    facts = {f.id: f for f in catalog.photo_facts()}
    keep = [n for n, i in enumerate(ids.tolist()) if i in facts]  # vectors of indexed photos only
    photos = [_photo(facts[i]) for i in ids[keep].tolist()]
    vecs = vectors[keep] if keep else np.zeros((0, row.dim), np.float32)
    return DuplicateJob(key, photos, vecs, config, row.fingerprint, hash_fn)


def _photo(f: PhotoFacts) -> Photo:
    return Photo(
        f.id, f.path, f.display_path or path_str(f.path), f.size, f.width, f.height, f.taken_at, f.date_key,
        f.content_hash,
    )



def find_duplicates(
    photos: Sequence[Photo],
    vectors: np.ndarray,
    config: DuplicateConfig = DuplicateConfig(),
    *,
    model: str = "",
    hash_fn: HashFn = perceptual_hash,
) -> DuplicateReport:
    """Group `photos` (aligned with their (N, D) unit `vectors`); see the module docstring.

    `hash_fn` is the perceptual hash (a 64-bit int from a file path); benchmarks swap it.
    """
    level = TIERS.index(config.tier)
    files = _FileFacts(photos, hash_fn)
    loosest = config.near_similarity if level < 2 else min(config.near_similarity, config.burst_similarity)
    a, b, sims = pairs_within(vectors, loosest)
    exact = _UnionFind(len(photos))
    for group in _same_hash(photos):
        for other in group[1:]:
            exact.union(group[0], other)
    near_edges: list[tuple[int, float, int, int]] = []
    burst_edges: list[tuple[int, int]] = []
    for i, j, s in zip(a.tolist(), b.tolist(), sims.tolist()):
        if exact.find(i) == exact.find(j):
            continue
        p, q = photos[i], photos[j]
        times_differ = p.taken_at is not None and q.taken_at is not None and p.taken_at != q.taken_at
        if s >= config.near_similarity and not times_differ:
            bits = files.distance(i, j)
            if bits is not None and bits <= config.exact_max_bits and files.same_pixels(i, j):
                exact.union(i, j)
                continue
            if bits is not None and bits <= config.near_max_bits:
                near_edges.append((bits, -s, i, j))
        if level == 2 and p.taken_at is not None and q.taken_at is not None and s >= config.burst_similarity:
            if times_differ and abs(p.taken_at - q.taken_at) <= config.window_s:
                burst_edges.append((i, j))
    near = _near_components(photos, exact, near_edges if level >= 1 else [])
    burst = near.copy()
    for i, j in burst_edges:
        burst.union(i, j)
    final = [exact, near, burst][level]
    groups = [_group(members, photos, exact, near) for members in final.components() if len(members) > 1]
    groups.sort(key=lambda g: (-len(g.members), g.members[0].path))
    return DuplicateReport(model=model, photos=len(photos), window_s=config.window_s, tier=config.tier, groups=groups)


def _same_hash(photos: Sequence[Photo]) -> list[list[int]]:
    by_hash: dict[str, list[int]] = {}
    for n, p in enumerate(photos):
        if p.content_hash:
            by_hash.setdefault(p.content_hash, []).append(n)
    return [g for g in by_hash.values() if len(g) > 1]


def _near_components(photos: Sequence[Photo], exact: _UnionFind, edges: list[tuple[int, float, int, int]]) -> _UnionFind:
    """Exact groups joined by near edges, closest first, never into a group holding two capture times:
    an EXIF-stripped copy close to both a shot and the next shot of a burst joins the shot it is closest to."""
    near = exact.copy()
    times: dict[int, set[float]] = {}
    for n, p in enumerate(photos):
        if p.taken_at is not None:
            times.setdefault(near.find(n), set()).add(p.taken_at)
    for _bits, _s, i, j in sorted(edges):
        ri, rj = near.find(i), near.find(j)
        if ri == rj:
            continue
        joined = times.get(ri, set()) | times.get(rj, set())
        if len(joined) > 1:
            continue
        root = near.union(i, j)
        times.pop(ri, None), times.pop(rj, None)
        if joined:
            times[root] = joined
    return near


def _group(members: list[int], photos: Sequence[Photo], exact: _UnionFind, near: _UnionFind) -> DuplicateGroup:
    keep = min(members, key=lambda n: _keeper_key(photos[n]))

    def match(n: int) -> str:
        if n == keep:
            return "keeper"
        if exact.find(n) == exact.find(keep):
            return "exact"
        return "near" if near.find(n) == near.find(keep) else "burst"

    rank = {"keeper": 0, "exact": 1, "near": 2, "burst": 3}
    order = sorted(members, key=lambda n: (rank[match(n)], _keeper_key(photos[n])))  # keeper, then closest first
    out = []
    for n in order:
        p = photos[n]
        out.append(Member(p.id, p.display_path, p.size, p.width, p.height, iso_time(p.taken_at), match(n)))
    tier: Tier = "exact"
    for t in TIERS:
        if any(m.match == t for m in out):
            tier = t
    return DuplicateGroup(tier, photos[keep].id, KEEPER_RULE, _why(photos[keep], [photos[n] for n in order[1:]]), tuple(out))


def _keeper_key(p: Photo) -> tuple[float, float, float, int]:
    return (-_pixels(p), -(p.size or 0), p.date_key if p.date_key is not None else float("inf"), p.id)


def _pixels(p: Photo) -> int:
    return (p.width or 0) * (p.height or 0)


def _why(keeper: Photo, others: list[Photo]) -> str:
    """Which step of the rule chose the keeper, in words."""
    best_other = max(_pixels(o) for o in others)
    if _pixels(keeper) > best_other:
        return f"largest resolution: {keeper.width}x{keeper.height}"
    tied = [o for o in others if _pixels(o) == _pixels(keeper)]
    if (keeper.size or 0) > max(o.size or 0 for o in tied):
        return f"largest file among those at {keeper.width}x{keeper.height}: {keeper.size} bytes"
    tied = [o for o in tied if (o.size or 0) == (keeper.size or 0)]
    if keeper.date_key is not None and all(o.date_key is None or o.date_key > keeper.date_key for o in tied):
        return f"earliest of those with the same resolution and size: {iso_time(keeper.date_key)}"
    return "all equal in resolution, size and date: the first indexed"


class _FileFacts:
    """Perceptual hashes and pixel digests, read from the files once each, only when asked."""

    def __init__(self, photos: Sequence[Photo], hash_fn: HashFn) -> None:
        self.photos = photos
        self.hash_fn = hash_fn
        self._hashes: dict[int, int | None] = {}
        self._digests: dict[int, tuple[int, int, str] | None] = {}

    def distance(self, i: int, j: int) -> int | None:
        hi, hj = self._hash(i), self._hash(j)
        return None if hi is None or hj is None else hamming(hi, hj)

    def same_pixels(self, i: int, j: int) -> bool:
        p, q = self.photos[i], self.photos[j]
        if p.width is None or (p.width, p.height) != (q.width, q.height):
            return False
        di, dj = self._digest(i), self._digest(j)
        return di is not None and di == dj

    def _hash(self, n: int) -> int | None:
        if n not in self._hashes:
            self._hashes[n] = self.hash_fn(self.photos[n].path)
        return self._hashes[n]

    def _digest(self, n: int) -> tuple[int, int, str] | None:
        if n not in self._digests:
            self._digests[n] = pixel_digest(self.photos[n].path)
        return self._digests[n]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def copy(self) -> _UnionFind:
        other = _UnionFind(0)
        other.parent = list(self.parent)
        return other

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, x: int, y: int) -> int:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)
        return min(rx, ry)

    def components(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for n in range(len(self.parent)):
            out.setdefault(self.find(n), []).append(n)
        return list(out.values())
