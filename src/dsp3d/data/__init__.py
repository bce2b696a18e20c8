"""The typed data contract shared by every package: clouds before and after subsampling."""

from dsp3d.data.types import Cloud, SubsampledCloud

__all__ = ["Cloud", "SubsampledCloud"]
