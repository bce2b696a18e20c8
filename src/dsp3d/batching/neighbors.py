"""Capped radius neighbours and nearest neighbours within the samples of a stacked cloud.

A stacked cloud concatenates the points of several samples; ``lengths`` [B] says how many belong to
each, in order. A neighbour is only ever taken from the query's own sample.

Rather than one KD-tree per sample, the samples are pushed apart along x (sample b moves by b x spacing,
in float64) and one tree is built over all of them: with a spacing larger than the samples' extent plus
the search distance no search can reach another sample, and a single tree build and query is much
cheaper than B small ones (benchmarks/bench_pyramid.py measures both). The results equal a per-sample
search exactly, including the padding: scipy returns the index ``n`` (the number of supports) for a
missing neighbour, which is the shadow index of the Batch contract.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def sample_ids(lengths: np.ndarray) -> np.ndarray:
    """int64 [sum(lengths)]: the sample index of every point of a stacked cloud."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def separation(*clouds: np.ndarray, reach: float = 0.0) -> float:
    """A shift between consecutive samples that no search of distance ``reach`` can cross.

    clouds: float [N_i, 3] point sets (all levels, queries and supports) of the same samples, each in its
    sample's own frame. Past extent + diagonal of their common bounding box, a point's nearest neighbour
    in its own sample is always closer than any point of another sample, so even an unbounded nearest
    neighbour search stays in its sample.
    """
    stacked = [np.asarray(c, dtype=np.float64) for c in clouds if len(c)]
    if not stacked:
        return 1.0
    low = np.min([c.min(axis=0) for c in stacked], axis=0)
    high = np.max([c.max(axis=0) for c in stacked], axis=0)
    extent = high - low
    return float(extent[0] + max(np.linalg.norm(extent), reach) + 1.0)


def _shifted(points: np.ndarray, lengths: np.ndarray | None, spacing: float) -> np.ndarray:
    """float64 [N, 3]: ``points`` with sample b moved by b x spacing along x."""
    out = np.array(points, dtype=np.float64)
    if lengths is not None and len(lengths) > 1:
        out[:, 0] += sample_ids(lengths) * spacing
    return out


def _check_lengths(points: np.ndarray, lengths: np.ndarray | None, what: str) -> None:
    if lengths is not None and int(np.sum(lengths)) != len(points):
        raise ValueError(f"{what} lengths sum to {int(np.sum(lengths))} but there are {len(points)} points")


class StackedTree:
    """One KD-tree over the supports of all samples of a stacked cloud, reusable for several queries.

    supports: float [Ns, 3]; lengths: int [B] or None (one sample); spacing: from ``separation`` over
    every cloud that will be searched, so that queries and supports are shifted alike.
    """

    def __init__(self, supports: np.ndarray, lengths: np.ndarray | None, spacing: float):
        _check_lengths(supports, lengths, "support")
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.spacing = spacing
        self.size = len(supports)
        # Unbalanced, non-compact trees with leaves of 32 build about 3x faster than scipy's defaults
        # and query as fast or faster on these clouds (benchmarks/bench_pyramid.py).
        self.tree = cKDTree(
            _shifted(supports, self.lengths, spacing), leafsize=32, balanced_tree=False, compact_nodes=False
        )

    def _queries(self, queries: np.ndarray, q_lengths: np.ndarray | None) -> np.ndarray:
        _check_lengths(queries, q_lengths, "query")
        if (q_lengths is None) != (self.lengths is None) or (
            q_lengths is not None and len(q_lengths) != len(self.lengths)
        ):
            raise ValueError("queries and supports must have lengths for the same number of samples")
        if q_lengths is not None and np.any((np.asarray(q_lengths) > 0) & (self.lengths == 0)):
            raise ValueError("a sample has query points but no support points")
        return _shifted(queries, q_lengths, self.spacing)

    def radius(
        self, queries: np.ndarray, q_lengths: np.ndarray | None, radius: float, cap: int
    ) -> np.ndarray:
        """int64 [Nq, cap]: up to ``cap`` supports within ``radius`` of each query, nearest first,
        padded with the shadow index Ns."""
        if cap < 1:
            raise ValueError(f"neighbour cap must be >= 1, got {cap}")
        shifted = self._queries(queries, q_lengths)
        if self.size == 0 or len(shifted) == 0:
            return np.full((len(shifted), cap), self.size, dtype=np.int64)
        _, index = self.tree.query(shifted, k=cap, distance_upper_bound=radius, workers=-1)
        return np.asarray(index, dtype=np.int64).reshape(len(shifted), cap)

    def nearest(
        self, queries: np.ndarray, q_lengths: np.ndarray | None, hint: float | None = None
    ) -> np.ndarray:
        """int64 [Nq]: the nearest support of each query, in the query's sample.

        hint: a distance within which most queries have a support (the diagonal of the coarse voxel in
        the pyramid); a bounded search is faster, and queries it misses are searched again unbounded.
        """
        shifted = self._queries(queries, q_lengths)
        if len(shifted) == 0:
            return np.zeros(0, dtype=np.int64)
        if self.size == 0:
            raise ValueError("nearest neighbour search without support points")
        bound = np.inf if hint is None else hint
        _, index = self.tree.query(shifted, k=1, distance_upper_bound=bound, workers=-1)
        index = np.asarray(index, dtype=np.int64).reshape(len(shifted))
        missed = np.flatnonzero(index == self.size)
        if len(missed):
            index[missed] = self.tree.query(shifted[missed], k=1, workers=-1)[1]
        return index


def radius_neighbors(
    queries: np.ndarray,
    supports: np.ndarray,
    radius: float,
    cap: int,
    q_lengths: np.ndarray | None = None,
    s_lengths: np.ndarray | None = None,
) -> np.ndarray:
    """int64 [Nq, cap]: per query, the nearest ``cap`` supports of its own sample within ``radius``
    (strictly closer, as scipy), nearest first, missing entries = Ns (the shadow index).

    queries: float [Nq, 3]; supports: float [Ns, 3]; q_lengths / s_lengths: int [B] or both None.
    """
    spacing = separation(queries, supports, reach=radius)
    return StackedTree(supports, s_lengths, spacing).radius(queries, q_lengths, radius, cap)


def nearest_neighbor(
    queries: np.ndarray,
    supports: np.ndarray,
    q_lengths: np.ndarray | None = None,
    s_lengths: np.ndarray | None = None,
) -> np.ndarray:
    """int64 [Nq]: index in ``supports`` of each query's nearest support of the same sample."""
    spacing = separation(queries, supports)
    return StackedTree(supports, s_lengths, spacing).nearest(queries, q_lengths)
