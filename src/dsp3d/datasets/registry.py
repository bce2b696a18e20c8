"""Scene sources of the real datasets, for dsp3d.data.prepare (S3DIS, ScanNet, a user folder).

Loaders are ``functools.partial`` objects of module-level functions, so that preprocessing can run
them in worker processes (they are pickled there).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from dsp3d.config import Config
from dsp3d.data.prepare import SceneSource
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


def s3dis_sources(config: Config) -> tuple[list[SceneSource], list[SceneSource], list[str]]:
    """Rooms of every area but data.test_area (train), and of data.test_area (test)."""
    from dsp3d.datasets.s3dis import S3DIS_CLASSES, load_room, s3dis_split

    train_rooms, test_rooms = s3dis_split(config.data.root, config.data.test_area)

    def source(room: tuple[str, str, Path]) -> SceneSource:
        area, name, path = room
        identity = {"dataset": "s3dis", **_folder_identity(path), "version": SOURCES_VERSION}
        return SceneSource(f"{area}/{name}", identity, partial(load_room, path, f"{area}/{name}"))

    return [source(r) for r in train_rooms], [source(r) for r in test_rooms], list(S3DIS_CLASSES)


def scannet_split_scenes(config: Config) -> tuple[list[str], list[str]]:
    """(train, val) scene names: data.val_scenes when given (other rescans of their rooms are left out
    of training), else the official split files in data.root, else a seeded split by room."""
    from dsp3d.datasets.scannet import list_scenes, room_of, scannet_split

    root = Path(config.data.root)
    explicit = list(config.data.val_scenes)
    if not explicit:
        return scannet_split(root, None, config.data.val_fraction, config.data.split_seed)
    scenes = list_scenes(root)
    missing = sorted(set(explicit) - set(scenes))
    if missing:
        raise DataError(f"{root}: data.val_scenes names scenes that are not there: {', '.join(missing)}")
    held_rooms = {room_of(scene) for scene in explicit}
    train = [scene for scene in scenes if room_of(scene) not in held_rooms]
    return train, [scene for scene in scenes if scene in set(explicit)]


def scannet_sources(config: Config) -> tuple[list[SceneSource], list[SceneSource], list[str]]:
    from dsp3d.datasets.scannet import SCANNET_CLASSES, load_scene, scans_folder

    root = Path(config.data.root)
    train, val = scannet_split_scenes(config)
    scans = scans_folder(root)

    def source(scene: str) -> SceneSource:
        identity = {"dataset": "scannet", **_folder_identity(scans / scene), "version": SOURCES_VERSION}
        return SceneSource(scene, identity, partial(load_scene, root, scene))

    return [source(s) for s in train], [source(s) for s in val], list(SCANNET_CLASSES)


def folder_sources(config: Config) -> tuple[list[SceneSource], list[SceneSource], list[str]]:
    """Every cloud file of the folder; data.val_scenes (file stems) are held out for testing."""
    from dsp3d.datasets.folder import list_folder, load_folder_cloud, load_folder_spec

    root = Path(config.data.root)
    spec = load_folder_spec(root)
    if spec.fields.label is None:
        raise DataError(f"{spec.path}: a dataset folder needs a 'label' field to train or evaluate on")
    files = list_folder(root, spec)
    stems = {p.stem for p in files}
    missing = sorted(set(config.data.val_scenes) - stems)
    if missing:
        raise DataError(f"{root}: data.val_scenes names files that are not there: {', '.join(missing)}")
    val = set(config.data.val_scenes)

    def source(path: Path) -> SceneSource:
        identity = {
            "dataset": "folder",
            **_file_identity(path),
            "spec": repr(spec.fields),
            "version": SOURCES_VERSION,
        }
        return SceneSource(path.stem, identity, partial(load_folder_cloud, path, spec))

    train = [source(p) for p in files if p.stem not in val]
    test = [source(p) for p in files if p.stem in val]
    return train, test, list(spec.class_names)


def real_dataset_sources(config: Config) -> tuple[list[SceneSource], list[SceneSource], list[str]]:
    """(train sources, test sources, class names) of data.dataset in s3dis / scannet / folder."""
    if not config.data.root:
        raise DataError(f"data.root must name the {config.data.dataset} folder")
    if not Path(config.data.root).exists():
        raise DataError(f"{config.data.root}: dataset folder not found")
    builders = {"s3dis": s3dis_sources, "scannet": scannet_sources, "folder": folder_sources}
    return builders[config.data.dataset](config)
