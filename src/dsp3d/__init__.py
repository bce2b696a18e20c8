"""dsp3d: weakly supervised semantic segmentation of 3D point clouds with dense supervision
propagation (DSP) on a KPConv backbone. docs/architecture.md maps the packages.

The Python API (dsp3d.api): ``dsp3d.load_model``, ``dsp3d.load_config``, ``dsp3d.train``,
``dsp3d.load_run``. It loads at the first use of one of these names, so that ``import dsp3d`` (and the
command line's start) does not import torch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsp3d")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

_API = ("Model", "Prediction", "Run", "load_config", "load_model", "load_run", "train")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from dsp3d import api

        return getattr(api, name)
    raise AttributeError(f"module 'dsp3d' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
