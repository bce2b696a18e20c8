"""Pairs of spheres for CSFR: two samples whose labelled classes intersect (DESIGN.md section 1)."""

from __future__ import annotations

import logging

import numpy as np

from dsp3d.sampling.scenes import SceneSet
from dsp3d.sampling.spheres import ClassBalancedSampler, PotentialSampler, SphereDraw

log = logging.getLogger("dsp3d")


def labelled_classes(scene_set: SceneSet, scene_id: int, indices: np.ndarray) -> frozenset[int]:
    """The classes of the weak-labelled points among the scene's points ``indices`` (int64 [n])."""
    indices = np.asarray(indices, dtype=np.int64)
    labels = scene_set.clouds[scene_id].labels
    if labels is None or len(indices) == 0:
        return frozenset()
    weak = indices[scene_set.weak_mask(scene_id)[indices]]
    found = np.unique(labels[weak])
    return frozenset(int(c) for c in found[found >= 0])


class PairSampler:
    """Draws (first, second) spheres whose labelled classes intersect.

    The first sphere comes from ``picker`` (potential-based or class-balanced); a first sphere without
    any labelled point cannot be paired and is drawn again. The second:
    - with ``coverage`` (a PotentialSampler): the next coverage spheres, up to ``tries`` of them, until
      one shares a labelled class. Pairs are then made of ordinary training spheres, so CSFR trains on the
      same sphere distribution as the baseline; counted in ``coverage_partners``;
    - otherwise, or when no coverage sphere matched: a sphere of ``balanced`` centred on a weak point of
      one of the first sphere's classes, in any scene (the pair shares that class by construction).
    After ``tries`` first spheres without a labelled class, the pair falls back to two unrelated spheres
    from ``picker``, which is logged and counted in ``fallbacks``.
    """

    def __init__(
        self,
        scene_set: SceneSet,
        picker: PotentialSampler | ClassBalancedSampler,
        balanced: ClassBalancedSampler,
        tries: int,
        coverage: PotentialSampler | None = None,
    ):
        if tries < 1:
            raise ValueError(f"pair tries must be >= 1, got {tries}")
        self.scene_set = scene_set
        self.picker = picker
        self.balanced = balanced
        self.coverage = coverage
        self.tries = tries
        self.fallbacks = 0
        self.pairs = 0
        self.coverage_partners = 0

    def classes(self, draw: SphereDraw) -> frozenset[int]:
        return labelled_classes(self.scene_set, draw.scene_id, draw.indices)

    def _partner(self, wanted: frozenset[int]) -> SphereDraw:
        if self.coverage is not None:
            for _ in range(self.tries):
                second = self.coverage.draw()
                if wanted & self.classes(second):
                    self.coverage_partners += 1
                    return second
        second = self.balanced.draw(wanted)
        self.picker.record(second)  # coverage counts the partner sphere as seen
        return second

    def draw(self) -> tuple[SphereDraw, SphereDraw]:
        self.pairs += 1
        first = None
        for _ in range(self.tries):
            first = self.picker.draw()
            wanted = self.classes(first) & frozenset(self.balanced.classes)
            if wanted:
                return first, self._partner(wanted)
        self.fallbacks += 1
        # Warn on the first fallback and then now and again: an impossible setting would flood the log.
        level = logging.WARNING if self.fallbacks == 1 or self.fallbacks % 100 == 0 else logging.DEBUG
        log.log(
            level,
            "CSFR pairs: no sphere pair sharing a labelled class after %d tries; using an unrelated pair "
            "(%d fallbacks in %d pairs)",
            self.tries,
            self.fallbacks,
            self.pairs,
        )
        first = first if first is not None else self.picker.draw()
        return first, self.picker.draw()
