"""Prediction on clouds of any size: a cloud file read in chunks, subsampled, voted over tiled spheres and
written back with a label per point.

Modules, each importing only those after it: ``pipeline`` (a file's passes, in order), ``predict``
(``Predictor``: the model on a subsampled cloud, tiled test spheres), ``voxels`` (grid subsampling in
chunks, the voxel of any point).

Layer 8 (docs/architecture.md): imports every lower layer (model, training's inference-model files).
"""
