"""``dsp3d report``: one self-contained HTML page (tables, plots, an interactive WebGL point viewer)."""
