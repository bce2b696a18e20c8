"""The embedded default dataset: procedurally generated indoor rooms with S3DIS's 13 classes.

    from dsp3d.datasets.synthetic import SYNTHETIC_CLASSES, generate_room, generate_rooms
    cloud = generate_room(seed=0)                 # a Cloud: float32 points, colours, int64 labels
    rooms = generate_rooms(10, seed=0)            # names room_000 ... room_009

Modules: classes (label names), primitives (surface sampling), materials (colours and lighting), shell
(walls, floor, ceiling, beams, columns), openings (doors, windows, boards), furniture, clutter, room
(the layout of one room and the public entry points). See docs/synthetic.md.
"""

from dsp3d.datasets.synthetic.classes import SYNTHETIC_CLASSES
from dsp3d.datasets.synthetic.room import generate_room, generate_rooms, room_seed

__all__ = ["SYNTHETIC_CLASSES", "generate_room", "generate_rooms", "room_seed"]
