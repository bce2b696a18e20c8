"""What an output says of its classes: their colours (``label_palette``, one palette for every file and
picture dsp3d writes).
"""

from __future__ import annotations

import colorsys

import numpy as np


def label_palette(num_classes: int) -> np.ndarray:
    """uint8 [C, 3]: distinct, stable colours per class (golden-ratio hues, alternating brightness)."""
    colours = [
        colorsys.hsv_to_rgb((c * 0.618033988749895) % 1.0, 0.75, 0.95 if c % 2 == 0 else 0.7)
        for c in range(num_classes)
    ]
    return np.round(np.array(colours, dtype=np.float64) * 255).astype(np.uint8).reshape(num_classes, 3)
