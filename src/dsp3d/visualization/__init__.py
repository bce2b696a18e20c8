"""Pictures of runs: training curves, per-class IoU, confusion matrices, scene renders, affinity maps
(the paper's Fig. 4) and coloured PLY exports. Everything renders headless (matplotlib's Agg canvas and a
small numpy point renderer), so it works on servers and in CI.

Layer 10 (docs/architecture.md): imports every lower layer (workflow to read runs, inference, model).
"""
