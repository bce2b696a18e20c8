"""Every dataset's scenes, split into train / val / test (dsp3d.datasets.sources), for dsp3d.workflow.prepare:
the generated rooms, S3DIS, ScanNet and a user's folder of clouds.

Loaders are ``functools.partial`` objects of module-level functions, so that preprocessing can run
them in worker processes (they are pickled there).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from dsp3d.config import Config
from dsp3d.datasets.sources import SceneSource, SceneSplit, split_by_name
from dsp3d.io.errors import DataError

SOURCES_VERSION = 1  # bump when a loader's output changes: cached scenes are then rebuilt


def _file_identity(path: Path) -> dict:
    """What keys a cached scene: the file and its size and modification time (a changed file re-runs)."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime)}


def _folder_identity(folder: Path) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {
        "path": str(folder.resolve()),
        "files": [(str(p.relative_to(folder)), p.stat().st_size, int(p.stat().st_mtime)) for p in files],
    }


def s3dis_split_sources(config: Config) -> SceneSplit:
    """Rooms of data.test_area (test), or the rooms data.test_scenes names (``Area_N/room``); rooms named
    in data.val_scenes (validation); every other room (train)."""
    from dsp3d.datasets.s3dis import S3DIS_CLASSES, list_rooms, load_room, s3dis_split

    d = config.data
    rooms = {f"Area_{area}/{name}": path for area, name, path in list_rooms(d.root)}
    default_test = []
    if not d.test_scenes:
        default_test = [f"{area}/{name}" for area, name, _ in s3dis_split(d.root, d.test_area)[1]]
    train, val, test = split_by_name(list(rooms), d.test_scenes, d.val_scenes, default_test, where=d.root)

    def source(name: str) -> SceneSource:
        identity = {"dataset": "s3dis", **_folder_identity(rooms[name]), "version": SOURCES_VERSION}
        return SceneSource(name, identity, partial(load_room, rooms[name], name))

    return _split(train, val, test, source, S3DIS_CLASSES)


def scannet_split_scenes(config: Config) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) scene names: data.test_scenes / data.val_scenes when given (every rescan of
    their rooms is left out of training), else the official split files in data.root (their validation
    split is the test set), else a seeded split by room."""
    from dsp3d.datasets.scannet import list_scenes, room_of, scannet_split

    d = config.data
    root = Path(d.root)
    scenes = list_scenes(root)
    if d.test_scenes or not d.val_scenes:
        default_train, default_test = ([], [])
        if not d.test_scenes:
            default_train, default_test = scannet_split(root, None, d.val_fraction, d.split_seed)
        names = (d.test_scenes, d.val_scenes, default_test)
        train, val, test = split_by_name(scenes, *names, room_of, str(root))
        if default_train:  # the official train list: scenes in neither list stay out
            train = [scene for scene in train if scene in set(default_train)]
        return train, val, test
    return split_by_name(scenes, [], d.val_scenes, [], room_of, str(root))


def scannet_split_sources(config: Config) -> SceneSplit:
    from dsp3d.datasets.scannet import SCANNET_CLASSES, load_scene, scans_folder

    root = Path(config.data.root)
    scans = scans_folder(root)

    def source(scene: str) -> SceneSource:
        identity = {"dataset": "scannet", **_folder_identity(scans / scene), "version": SOURCES_VERSION}
        return SceneSource(scene, identity, partial(load_scene, root, scene))

    return _split(*scannet_split_scenes(config), source, SCANNET_CLASSES)


def folder_split_sources(config: Config) -> SceneSplit:
    """Every cloud file of the folder; data.test_scenes / data.val_scenes (file stems) are held out."""
    from dsp3d.datasets.folder import list_folder, load_folder_cloud, load_folder_spec

    d = config.data
    root = Path(d.root)
    spec = load_folder_spec(root)
    if spec.fields.label is None:
        raise DataError(f"{spec.path}: a dataset folder needs a 'label' field to train or evaluate on")
    files = {p.stem: p for p in list_folder(root, spec)}
    train, val, test = split_by_name(list(files), d.test_scenes, d.val_scenes, [], where=str(root))

    def source(stem: str) -> SceneSource:
        path = files[stem]
        identity = {
            "dataset": "folder",
            **_file_identity(path),
            "spec": repr(spec.fields),
            "version": SOURCES_VERSION,
        }
        return SceneSource(path.stem, identity, partial(load_folder_cloud, path, spec))

    return _split(train, val, test, source, spec.class_names)


def synthetic_split_sources(config: Config) -> SceneSplit:
    """Generated rooms: data.synthetic.train_rooms / val_rooms / test_rooms, each split from its own seed
    stream, so that no held-out room is a copy of a training room."""
    from dsp3d.datasets.synthetic import SYNTHETIC_CLASSES, generate_room

    s = config.data.synthetic

    def source(split: str, index: int, seed: int) -> SceneSource:
        name = f"{split}_{index:03d}"
        identity = {"dataset": "synthetic", "seed": seed, "density": s.density, "version": 1}
        return SceneSource(name, identity, partial(generate_room, seed, density=s.density, name=name))

    base = s.seed * 100_003
    return SceneSplit(
        train=[source("train", k, base + k) for k in range(s.train_rooms)],
        val=[source("val", k, base + 25_000 + k) for k in range(s.val_rooms)],
        test=[source("test", k, base + 50_000 + k) for k in range(s.test_rooms)],
        class_names=list(SYNTHETIC_CLASSES),
    )


def _split(train, val, test, source: Callable[[str], SceneSource], class_names) -> SceneSplit:
    return SceneSplit(
        train=[source(n) for n in train],
        val=[source(n) for n in val],
        test=[source(n) for n in test],
        class_names=list(class_names),
    )


def dataset_split(config: Config) -> SceneSplit:
    """The train / val / test scene sources and class names of data.dataset."""
    if config.data.dataset == "synthetic":
        return synthetic_split_sources(config)
    if not config.data.root:
        raise DataError(f"data.root must name the {config.data.dataset} folder")
    if not Path(config.data.root).exists():
        raise DataError(f"{config.data.root}: dataset folder not found")
    builders = {
        "s3dis": s3dis_split_sources,
        "scannet": scannet_split_sources,
        "folder": folder_split_sources,
    }
    return builders[config.data.dataset](config)
