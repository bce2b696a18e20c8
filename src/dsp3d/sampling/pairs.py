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

    The first sphere comes from ``picker`` (potential-based or class-balanced). If it holds a labelled
    class, the second is centred on a weak point of one of its classes, in any scene, so the pair shares
    that class by construction (the centre's own point lies in the sphere). A first sphere without any
    labelled point cannot be paired and is drawn again; after ``tries`` attempts the pair falls back to
    two unrelated spheres from ``picker``, which is logged and counted in ``fallbacks``.
    """

    def __init__(
        self,
        scene_set: SceneSet,
        picker: PotentialSampler | ClassBalancedSampler,
        partner: ClassBalancedSampler,
        tries: int,
    ):
        if tries < 1:
            raise ValueError(f"pair tries must be >= 1, got {tries}")
        self.scene_set = scene_set
        self.picker = picker
        self.partner = partner
        self.tries = tries
        self.fallbacks = 0
        self.pairs = 0

    def classes(self, draw: SphereDraw) -> frozenset[int]:
        return labelled_classes(self.scene_set, draw.scene_id, draw.indices)

    def draw(self) -> tuple[SphereDraw, SphereDraw]:
        self.pairs += 1
        first = None
        for _ in range(self.tries):
            first = self.picker.draw()
            shared = self.classes(first) & frozenset(self.partner.classes)
            if not shared:
                continue
            second = self.partner.draw(shared)
            if shared & self.classes(second):
                self.picker.record(second)
                return first, second
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
