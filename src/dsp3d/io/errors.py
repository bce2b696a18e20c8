"""The errors and warnings raised for bad input data.

Every problem with a user's file is a ``DataError`` whose message starts with the file (and, where it
helps, the line or YAML key), so the command line can print it as is instead of a traceback.
"""

from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be read or does not satisfy the data contract."""


class DataWarning(UserWarning):
    """Input data that was read, but only after a documented repair (e.g. a corrupted S3DIS line)."""
