"""``dsp3d report``: one self-contained HTML page (tables, plots, an interactive WebGL point viewer).

Layer 11 (docs/architecture.md): imports every lower layer (visualization, workflow's ablation tables).
"""
