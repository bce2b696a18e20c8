"""Point cloud files (PLY, LAS/LAZ, NPY/NPZ, TXT/CSV), their fields, atomic writes, and DataError.

Layer 1 (docs/architecture.md): imports data only.
"""
