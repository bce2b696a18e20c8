"""Runs end to end: data preparation from a config, one run (train, export, score), ablations over
methods and seeds, the demo, several runs side by side, and what a run folder may hold.

Layer 9 (docs/architecture.md): imports every lower layer.
"""
