"""Prediction on clouds of any size: a cloud file read in chunks, subsampled, voted over tiled spheres and
written back with a label per point.

Layer 8 (docs/architecture.md): imports every lower layer (model, training's inference-model files).
"""
