"""dsp3d: weakly supervised point cloud segmentation with dense supervision propagation (DSP)."""

__version__ = "0.1.0"
