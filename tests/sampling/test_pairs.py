import dataclasses
import logging

import numpy as np
import pytest
from toy_scenes import toy_scene_set

from dsp3d.sampling.pairs import PairSampler, labelled_classes
from dsp3d.sampling.spheres import ClassBalancedSampler, PotentialSampler


def make_pairs(scenes, tries=20, seed=0, picker="potential", partner="balanced"):
    rng = np.random.default_rng(seed)
    balanced = ClassBalancedSampler(scenes, 0.8, rng)
    potential = PotentialSampler(scenes, 0.8, rng)
    first = balanced if picker == "balanced" else potential
    return PairSampler(scenes, first, balanced, tries, potential if partner == "potential" else None)


def test_labelled_classes_reads_only_weak_points():
    scenes = toy_scene_set(num_scenes=1, seed=0)
    labels = scenes.clouds[0].labels
    weak = scenes.weak_indices[0]
    unlabelled_floor = np.setdiff1d(np.flatnonzero(labels == 0), weak)[:50]
    assert labelled_classes(scenes, 0, unlabelled_floor) == frozenset()
    some = np.concatenate([unlabelled_floor, weak[labels[weak] == 3][:2]])
    assert labelled_classes(scenes, 0, some) == frozenset({3})


@pytest.mark.parametrize("partner", ["potential", "balanced"])
def test_pairs_share_a_labelled_class(partner):
    scenes = toy_scene_set(num_scenes=3, seed=0, ratio=0.005)
    for picker in ("potential", "balanced"):
        sampler = make_pairs(scenes, picker=picker, partner=partner)
        for _ in range(30):
            a, b = sampler.draw()
            shared = sampler.classes(a) & sampler.classes(b)
            assert shared, (sampler.classes(a), sampler.classes(b))
        assert sampler.fallbacks == 0


@pytest.mark.parametrize("partner", ["potential", "balanced"])
def test_pairs_can_come_from_different_scenes(partner):
    scenes = toy_scene_set(num_scenes=3, seed=0)
    sampler = make_pairs(scenes, partner=partner)
    pairs = [sampler.draw() for _ in range(30)]
    assert any(a.scene_id != b.scene_id for a, b in pairs)


def test_fallback_is_logged_and_counted(caplog):
    scenes = toy_scene_set(num_scenes=2, seed=0)
    # Only scene 1 has weak labels, far from anything scene 0 could offer, and a single try: a first
    # sphere from scene 0 (half of them) has no labelled class and cannot be paired.
    empty = dataclasses.replace(scenes, weak_indices=[np.zeros(0, dtype=np.int64), scenes.weak_indices[1]])
    sampler = make_pairs(empty, tries=1)
    with caplog.at_level(logging.DEBUG, logger="dsp3d"):
        for _ in range(20):
            a, b = sampler.draw()
            assert len(a.indices) and len(b.indices)
    assert sampler.fallbacks > 0
    assert any("CSFR pairs" in record.getMessage() for record in caplog.records)
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_potential_partner_takes_most_partners_from_the_coverage_stream():
    scenes = toy_scene_set(num_scenes=3, seed=0, ratio=0.05)
    sampler = make_pairs(scenes, partner="potential")
    for _ in range(30):
        a, b = sampler.draw()
        assert sampler.classes(a) & sampler.classes(b)
    assert sampler.coverage_partners >= 24 and sampler.fallbacks == 0
    assert make_pairs(scenes, partner="balanced").coverage_partners == 0
