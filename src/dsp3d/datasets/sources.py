"""What a dataset hands to preprocessing: its scenes as loadable sources, split into train / val / test.

train: the scenes training samples spheres from;
val:   held out of training, scored during training (train.val_every, best.pt): settings are chosen on
       these, never on the test scenes;
test:  held out of training, scored once at the end (results.json).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dsp3d.data.types import Cloud
from dsp3d.io.errors import DataError


@dataclass
class SceneSource:
    """A scene that can be loaded on demand, with the identity that keys its cache entry.

    ``load`` must be picklable (a module-level function or a partial of one, not a lambda): scenes are
    preprocessed in worker processes.
    """

    name: str
    identity: dict
    load: Callable[[], Cloud]


@dataclass
class SceneSplit:
    train: list[SceneSource]
    test: list[SceneSource]
    class_names: list[str]
    val: list[SceneSource] = field(default_factory=list)


def split_by_name(
    scenes: list[str],
    test: list[str],
    val: list[str],
    default_test: list[str],
    group: Callable[[str], str] = lambda name: name,
    where: str = "",
) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) scene names among ``scenes``.

    test: data.test_scenes, or, when only data.val_scenes is given, those (the ScanNet convention, where
    the official validation split is what results report; validation then has no scenes of its own), or
    ``default_test``. Every scene whose ``group`` (its room: ScanNet rescans share one) is held out for
    val or test is left out of training. Names that are not among ``scenes`` are a DataError naming them.
    """
    for key, names in (("data.test_scenes", test), ("data.val_scenes", val)):
        missing = sorted(set(names) - set(scenes))
        if missing:
            raise DataError(f"{where}: {key} names scenes that are not there: {', '.join(missing)}")
    if not test and val:
        test, val = list(val), []
    elif not test:
        test = list(default_test)
    overlap = sorted(set(test) & set(val))
    if overlap:
        raise DataError(f"{where}: {', '.join(overlap)} both in data.test_scenes and data.val_scenes")
    held = {group(name) for name in [*test, *val]}
    train = [name for name in scenes if group(name) not in held]
    return train, [n for n in scenes if n in set(val)], [n for n in scenes if n in set(test)]
