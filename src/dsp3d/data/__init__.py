"""The data contract shared by every package: clouds before and after subsampling, held-out scenes.

Layer 0 (docs/architecture.md): imports nothing from dsp3d.
"""

from dsp3d.data.types import IGNORE, Cloud, SubsampledCloud, TestScene

__all__ = ["IGNORE", "Cloud", "SubsampledCloud", "TestScene"]
