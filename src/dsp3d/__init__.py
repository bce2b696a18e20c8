"""dsp3d: weakly supervised semantic segmentation of 3D point clouds with dense supervision
propagation (DSP) on a KPConv backbone. docs/architecture.md maps the packages."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsp3d")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
