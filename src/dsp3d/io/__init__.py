"""Point cloud files (PLY, LAS/LAZ, NPY/NPZ, TXT/CSV), their fields, atomic writes, and DataError.

Modules: ``clouds`` (the registry of formats by suffix: ``reader_for``, ``writer_for``, whole-file reads
and writes), ``interface`` (the chunk reader and writer every format implements), one module per format
(``ply``, ``las``, ``arrays``: NPY / NPZ, ``text``), ``fields`` (which field is what, a file's fields to a
``Cloud``), ``classes`` (class colours), ``atomic`` (every write), ``errors``.

Layer 1 (docs/architecture.md): imports data only.
"""
