"""The ``dsp3d`` command line: the parser and the dispatch (main.py), and the commands that are more
than a call (commands.py).

Layer 12 (docs/architecture.md): imports every lower layer.
"""

from dsp3d.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
