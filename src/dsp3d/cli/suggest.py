"""``dsp3d suggest``: its arguments and what it runs (the parser's part is ``add_suggest``, called by
dsp3d.cli.main)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dsp3d.cli.arguments import add_config_args

log = logging.getLogger("dsp3d")

DESCRIPTION = """After a run (a run folder) or with a model file, rank the unlabelled points of the scenes
(cloud files, or without files the training scenes of the run's dataset, its weak labels being what is
labelled) by what a label there is worth, the model's doubt there (the entropy or margin of the
probabilities voted over test spheres) favouring the classes the run scores worst on, and pick --budget
of them: one per superpoint no label reached (a click labels its region through propagation), or picks
--spacing metres apart. -o gets each scene with picks in its own format with a `suggest` field (the rank,
0 elsewhere), suggestions.csv / .json (one row per point: scene, point, x y z, predicted class,
confidence, score, and a class column to fill in) and a picture per scene.

Label the points (in the CSV's class column, or in your files' label field with label_protocol: given),
then merge: dsp3d suggest RUN --labels suggestions.csv -o DIR writes the run's weak labels plus yours to
DIR; train on them with --set data.weak_labels=DIR."""


def add_suggest(sub, command) -> None:
    """The ``suggest`` subcommand; ``command``: dsp3d.cli.main's maker of subcommands."""
    parser = command(
        sub, "suggest", "which points to label next, after a run or with a model file", DESCRIPTION
    )
    parser.add_argument("source", metavar="RUN_OR_MODEL", help="a run folder, or a model.pt file")
    parser.add_argument(
        "scenes", nargs="*", metavar="SCENE", help="cloud files (default: the run's training scenes)"
    )
    parser.add_argument(
        "--budget", default=None, help="points to pick: a count (200) or a share of the points (0.5%%)"
    )
    parser.add_argument("-o", "--out", default=None, help="output folder (default suggestions)")
    parser.add_argument(
        "--labels",
        default=None,
        metavar="CSV",
        help="merge this filled-in suggestions.csv into the run's weak labels, written to -o",
    )
    add_config_args(
        parser,
        required=False,
        config_help="a config whose dataset's training scenes to use instead of the run's",
    )
    _add_choice_args(parser)


def _add_choice_args(parser: argparse.ArgumentParser) -> None:
    """How the points are chosen and what is written."""
    parser.add_argument(
        "--fields",
        default=None,
        help="YAML field spec for the cloud files (a label field marks what is labelled)",
    )
    parser.add_argument(
        "--measure", default="entropy", choices=("entropy", "margin"), help="the model's doubt at a point"
    )
    parser.add_argument(
        "--superpoints",
        default="auto",
        choices=("auto", "on", "off"),
        help="one pick per superpoint (auto: when the run's method propagates through them)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=None,
        help="metres between picks without superpoints (default 5 grid sizes)",
    )
    parser.add_argument(
        "--no-class-weights", action="store_true", help="do not favour the classes the run scores worst on"
    )
    parser.add_argument(
        "--balance",
        default="classes",
        choices=("none", "classes"),
        help="classes: share the picks among the classes the model predicts at them (the best of every "
        "class first, then the second best, ...); none: by the model's doubt alone",
    )
    parser.add_argument(
        "--colors",
        default="keep",
        choices=("keep", "suggest"),
        help="keep: the scan's colours stay; suggest: red/green/blue show the picks (the scan's own move to "
        "orig_red/green/blue)",
    )
    parser.add_argument("--no-pictures", action="store_true", help="no picture per scene")
    parser.add_argument("--batch-points", type=int, default=60000, help="points per inference batch (memory)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--force", action="store_true", help="replace earlier outputs in -o")


def suggest_command(args: argparse.Namespace) -> int:
    """Run ``dsp3d suggest`` as ``args`` ask; errors are DataError / ConfigError (one line)."""
    from dsp3d.io.errors import DataError
    from dsp3d.workflow.suggest import model_source

    source = model_source(args.source, args.config, args.overrides)
    if args.labels:
        if args.budget or args.scenes:
            raise DataError("--labels merges labels: give it without --budget and without scene files")
        return _merge(source, args)
    if not args.budget:
        raise DataError("--budget: how many points to pick, a count (200) or a share of the points (0.5%)")
    return _suggest(source, args)


def _suggest(source, args: argparse.Namespace) -> int:
    from dsp3d.inference.suggest import parse_budget
    from dsp3d.visualization.suggest import write_suggestion_pictures
    from dsp3d.workflow.suggest import SuggestOptions, suggest
    from dsp3d.workflow.suggest_outputs import check_outputs, write_outputs

    options = SuggestOptions(
        parse_budget(args.budget),
        measure=args.measure,
        superpoints=args.superpoints,
        spacing=args.spacing,
        class_weights=not args.no_class_weights,
        device=args.device,
        batch_points=args.batch_points,
        balance=args.balance,
    )
    out = Path(args.out or "suggestions")
    suggestions = suggest(
        source,
        args.scenes,
        options,
        args.fields,
        before_voting=lambda scenes: check_outputs(scenes, out, args.force),
    )
    rows = write_outputs(suggestions, out, args.colors)
    if not args.no_pictures:
        write_suggestion_pictures(suggestions, out)
    print(f"{len(rows)} points to label: {out / 'suggestions.csv'}")
    return 0


def _merge(source, args: argparse.Namespace) -> int:
    from dsp3d.io.errors import DataError
    from dsp3d.workflow.labels import merge_labels

    if source.config is None:
        raise DataError(
            f"{args.source}: --labels needs a run folder or --config, whose dataset's weak labels it extends"
        )
    if not args.out:
        raise DataError("--labels: give -o DIR, the weak-label folder to write (the run's labels and yours)")
    summary = merge_labels(source.config, args.labels, args.out, args.force, source.where)
    config_file = Path(source.run, "config.yaml") if source.run else Path(args.config)
    print(
        f"{summary.total} labelled points added to the weak labels in {summary.folder} ({summary.already} "
        f"rows labelled already, {summary.empty} without a class); train on them with: "
        f"dsp3d train --config {config_file} --set data.weak_labels={summary.folder} --out RUN_DIR"
    )
    return 0
