"""Training: an objective per stage mode, the loop and its collaborators (budget, run log, checkpoints),
data-parallel helpers, and the inference-model files a run exports.

Layer 7 (docs/architecture.md): imports everything below it (data ... model, losses), not evaluation.
"""
