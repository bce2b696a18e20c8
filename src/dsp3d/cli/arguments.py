"""Command-line options that several subcommands share (main's and suggest's)."""

from __future__ import annotations

import argparse


def add_config_args(
    parser: argparse.ArgumentParser, required: bool, config_help: str = "YAML config file"
) -> None:
    """--config FILE and repeatable --set KEY=VALUE (into ``args.config`` and ``args.overrides``)."""
    parser.add_argument("--config", required=required, default=None, help=config_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=0.005 (repeatable)",
    )
