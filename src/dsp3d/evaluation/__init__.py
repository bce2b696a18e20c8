"""Scores at full resolution: the confusion matrix, voting over test spheres, reprojection to every
original point, and the results tables.

Layer 7 (docs/architecture.md): imports everything below training (data ... model, losses).
"""
