"""The `dsp3d` command line: its parser and the dispatch of each command."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from dsp3d import progress
from dsp3d.cli.arguments import add_config_args
from dsp3d.cli.suggest import add_suggest
from dsp3d.config import (
    DEMO_DEFAULT_RUNS,
    DEMO_METHODS,
    DEMO_SEEDS,
    DEMO_STEPS,
    ConfigError,
    describe_config,
    load_config,
    load_run_config,
)
from dsp3d.faults import (
    STORAGE_ERRNOS,
    OutOfMemory,
    RunStopped,
    WriteFailed,
    is_out_of_memory,
    write_failure,
)
from dsp3d.methods import METHODS, TABLE1_MODES

log = logging.getLogger("dsp3d")
DESCRIPTION = """Weakly supervised semantic segmentation of 3D point clouds: KPConv trained on a few labelled
points, with DSP (dense supervision propagation) and other weak-label methods.

  dsp3d demo                          generated rooms: weak baseline, DSP and full supervision
  dsp3d config [FILE]                 every setting, its value and its meaning
  dsp3d train [--config FILE]         train a method on your data (docs/data.md)
  dsp3d superpoints [--config FILE]   the superpoints of your data and what weak labels reach through them
  dsp3d predict model.pt CLOUD -o OUT label every point of your clouds
  dsp3d suggest RUN_DIR --budget 0.5%  which points to label next"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsp3d", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="dsp3d's version and commit, torch's version, the CPU capability (and GPU) here, then exit",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only results and errors (no progress, no info log)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_demo,
        _add_train,
        _add_ablate,
        _add_predict,
        _add_evaluate,
        _add_superpoints,
        _add_config_command,
    ):
        add(sub)
    _add_picture_commands(sub)
    add_suggest(sub, _command)
    for command in sub.choices.values():  # --quiet also after the command name (dsp3d train --quiet ...)
        command.add_argument(
            "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only results and errors"
        )
    return parser


class _VersionAction(argparse.Action):
    """--version: what decides a run's numbers here (training.environment); imports torch only when
    asked, so that every other command starts as fast as before."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from dsp3d.training.environment import version_text

        print(version_text())
        parser.exit()


def _command(sub, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand: ``summary`` in ``dsp3d --help``, with ``description`` below it in its own --help."""
    return sub.add_parser(
        name,
        help=summary.replace("%", "%%"),  # argparse %-formats help strings
        description=f"{summary}.\n\n{description}",
        formatter_class=_Help,
    )


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; defaults shown where a flag has one (not None, not an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS or default == []
        if unset or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _add_demo(sub) -> None:
    demo = _command(
        sub,
        "demo",
        "generated rooms: the weak baseline, DSP and full supervision at 1% labels",
        "No download: a procedural generator builds indoor rooms with S3DIS's 13 classes. Every method\n"
        "trains once per seed, on the same weak labels for the same budget, on one torch thread (so the\n"
        "table repeats on this machine); the table shows each method's mean over the seeds and their spread.",
    )
    demo.add_argument("--ratio", type=float, default=0.01, help="weak-label ratio per class")
    demo.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps of each run, all its stages (default {DEMO_STEPS})",
    )
    demo.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="a time budget instead of --steps: minutes for the whole demo",
    )
    demo.add_argument("--seed", type=int, default=0, help="the first training seed")
    demo.add_argument(
        "--seeds",
        type=int,
        default=DEMO_SEEDS,
        help="training seeds per method (--seed, --seed + 1, ...); the weak labels stay data.weak_seed's",
    )
    demo.add_argument("--out", default="demo_out", help="output folder")
    demo.add_argument(
        "--runs",
        default=",".join(DEMO_DEFAULT_RUNS),
        help=f"comma-separated among {','.join(DEMO_METHODS)} (default {','.join(DEMO_DEFAULT_RUNS)})",
    )
    demo.add_argument(
        "--jobs", type=int, default=None, help="runs at a time, one thread each (default: one per core)"
    )
    demo.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting"
    )


def _add_train(sub) -> None:
    train = _command(
        sub,
        "train",
        "train one method from a config (or the defaults), or resume an interrupted run",
        "A run folder gets config.yaml, metrics.jsonl, TensorBoard events, weak_labels/, checkpoints/,\n"
        "model.pt and results.json. `dsp3d config` lists every setting.",
    )
    add_config_args(train, required=False)
    train.add_argument("--out", default=None, help="run folder (default runs/<config name>, or runs/default)")
    train.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint",
    )
    train.add_argument("--force", action="store_true", help="replace the run in a non-empty --out folder")


def _add_ablate(sub) -> None:
    ablate = _command(
        sub,
        "ablate",
        "compare methods over several seeds (the paper's Table 1 rows and Table 3 branches)",
        "Every row trains on the same weak labels with the same budget; ablation.json / ablation.md give\n"
        "each row's seed-paired difference to the baseline and to two-stage.",
    )
    ablate.add_argument(
        "--dataset", default=None, help="synthetic, s3dis, scannet or folder (default: the config's)"
    )
    ablate.add_argument("--root", default=None, help="dataset folder (real datasets)")
    ablate.add_argument("--ratio", type=float, default=None, help="weak-label ratio (default: the config's)")
    ablate.add_argument(
        "--minutes", type=float, default=None, help="training minutes of each run, all its stages"
    )
    ablate.add_argument("--steps", type=int, default=None, help="optimiser steps of each run, all its stages")
    ablate.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 for every method")
    ablate.add_argument(
        "--modes",
        default=",".join(TABLE1_MODES),
        help=f"comma-separated among {', '.join(METHODS)} (dsp = csfr-isfr)",
    )
    ablate.add_argument("--out", default="ablation_out", help="output folder")
    ablate.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    add_config_args(ablate, required=False)


def _add_predict(sub) -> None:
    predict = _command(
        sub,
        "predict",
        "label every point of clouds of any size (PLY, LAS/LAZ, NPY, TXT)",
        "Each cloud is read in chunks, predicted and written into -o in its own format with its fields, a\n"
        "class per point (pred) and its classes beside it (<name>.classes.json); predictions.json lists the\n"
        "classes and the points per class of every file (docs/data.md, Prediction outputs).",
    )
    predict.add_argument("checkpoint", help="model.pt written by train / demo")
    predict.add_argument("inputs", nargs="+", help="point cloud files")
    predict.add_argument(
        "-o", "--out", required=True, help="output folder (files keep their names and formats)"
    )
    predict.add_argument(
        "--fields", default=None, help="YAML field spec for NPY/TXT inputs (see docs/data.md)"
    )
    predict.add_argument(
        "--probabilities", action="store_true", help="also write the winning class probability"
    )
    predict.add_argument(
        "--colors",
        nargs="?",
        const="keep",
        default="keep",
        choices=("keep", "prediction", "none"),  # io.classes.COLOR_MODES, unimported: no numpy at start
        help="keep (default): the scan's colours stay in red/green/blue, the class colour goes to "
        "pred_red/green/blue; prediction: red/green/blue show the class colour (what viewers show), the "
        "scan's colours move to orig_red/green/blue; none: no colour fields",
    )
    predict.add_argument(
        "--batch-points",
        type=int,
        default=60000,
        help="points of the inference batches that run at once (memory)",
    )
    predict.add_argument(
        "--grid",
        type=float,
        default=None,
        metavar="METRES",
        help="subsample at this grid instead of the model's and show the cloud to the model that much "
        "smaller (model grid / this grid): a cloud much sparser than the model's grid then costs what a "
        "cloud at its grid costs, if seeing its shapes smaller is acceptable (default: the model's grid)",
    )
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--force", action="store_true", help="replace outputs of the same name in -o")


def _add_evaluate(sub) -> None:
    evaluate = _command(
        sub,
        "evaluate",
        "score an inference model at full resolution on a config's test scenes",
        "mIoU, OA and per-class IoU over every original point of the test scenes (voting over overlapping\n"
        "test spheres), written to evaluation.json beside the model unless --out says otherwise; the\n"
        "predicted class of every test point goes to predictions/ beside it (what plot, report and export\n"
        "of a run folder read instead of predicting again).",
    )
    evaluate.add_argument("checkpoint", help="model.pt written by train / demo")
    add_config_args(evaluate, required=True)
    evaluate.add_argument("--out", default=None, help="where to write the results (JSON)")


def _add_superpoints(sub) -> None:
    superpoints = _command(
        sub,
        "superpoints",
        "the superpoints of every scene, what they are worth, and pictures; no training",
        "Prepares the data as training does, computes (or reads from the cache) the partition of every\n"
        "training, validation and test scene (section superpoints) and prints per split: superpoints per\n"
        "scene, their mean and median size, their purity against the labels, and what 1% and 0.1% weak\n"
        "labels (and the config's own) reach through them, and how much of it is right (section\n"
        "propagation). Writes OUT/superpoints.json and one picture per drawn scene (OUT/pictures/).",
    )
    add_config_args(superpoints, required=False)
    superpoints.add_argument("--out", default="superpoints", help="output folder")
    superpoints.add_argument(
        "--scenes", type=int, default=1, help="test and training scenes drawn (each split's first N)"
    )
    superpoints.add_argument(
        "--cut",
        type=float,
        default=None,
        help="hide points above this fraction of a scene's height (default 0.8 indoors; 1 keeps all)",
    )


def _superpoints_command(args: argparse.Namespace) -> None:
    from dsp3d.io.atomic import prepare_output_folder
    from dsp3d.visualization.commands import dataset_cut
    from dsp3d.visualization.superpoints import write_partition_pictures
    from dsp3d.workflow.superpoints import survey_superpoints, survey_table, write_survey

    if args.scenes < 0:
        raise ConfigError(f"--scenes must be >= 0, got {args.scenes}")
    if args.cut is not None and args.cut <= 0:
        raise ConfigError(f"--cut must be > 0 (a fraction of the height; 1 keeps all), got {args.cut}")
    config = load_config(args.config, args.overrides)
    out = Path(args.out)
    prepare_output_folder(out)
    survey = survey_superpoints(config, args.scenes)
    cut = dataset_cut(config.data.dataset, args.cut)
    pictures = write_partition_pictures(survey.drawings, survey.class_names, out / "pictures", cut)
    path = write_survey(survey, out, pictures)
    print(survey_table(survey.figures))
    print(f"({path}; {len(pictures)} picture(s) in {out / 'pictures'})")


def _add_config_command(sub) -> None:
    config = _command(
        sub,
        "config",
        "print the resolved config: every setting with its value and its meaning",
        "Without FILE: the defaults. With --set: as a run would read them (errors name the setting).",
    )
    config.add_argument("file", nargs="?", default=None, help="YAML config file")
    config.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting"
    )


def _add_scene_args(parser: argparse.ArgumentParser, count: int) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, or folders of runs (demo)")
    parser.add_argument(
        "--scene",
        dest="scenes",
        action="append",
        default=None,
        metavar="NAME",
        help=f"test scene by name or index (repeatable; default: the first {count})",
    )
    parser.add_argument(
        "--scene-count", type=int, default=count, help=f"scenes when none named (default {count})"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="predict the scenes again instead of reading the predictions each run saved at evaluation",
    )


def _add_figure_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pair", type=int, default=0, help="test-sphere pair of the affinity maps (default 0)"
    )
    parser.add_argument("--point", type=int, default=None, help="query point of the affinity maps")
    parser.add_argument(
        "--cut",
        type=float,
        default=None,
        help="hide points above this fraction of a scene's height (default 0.8 indoors; 1 keeps all)",
    )


def _add_picture_commands(sub) -> None:
    plot = sub.add_parser("plot", help="PNG plots: curves, IoU, confusion, scene renders, affinity maps")
    _add_scene_args(plot, 1)
    _add_figure_args(plot)
    plot.add_argument("-o", "--out", default="plots", help="output folder (default plots)")
    plot.add_argument("--no-scenes", action="store_true", help="only the charts (no prediction needed)")
    report = sub.add_parser("report", help="one self-contained HTML report with a 3D viewer")
    _add_scene_args(report, 2)
    _add_figure_args(report)
    report.add_argument("-o", "--out", default="report.html", help="output file (default report.html)")
    report.add_argument("--ablation", default=None, help="ablation.json of dsp3d ablate (Table 1)")
    report.add_argument("--max-points", type=int, default=200_000, help="viewer points per scene")
    report.add_argument("--title", default="dsp3d report")
    export = sub.add_parser("export", help="coloured PLY of ground truth, predictions and errors")
    _add_scene_args(export, 1)
    export.add_argument("-o", "--out", default="export", help="output folder (default export)")


def _picture_command(args: argparse.Namespace) -> None:
    scenes = dict(
        scenes=args.scenes, scene_count=args.scene_count, device=args.device, recompute=args.recompute
    )
    if args.command == "plot":
        from dsp3d.visualization.commands import plot_command

        figures = dict(pair=args.pair, point=args.point, cut=args.cut)
        plot_command(args.runs, args.out, with_scenes=not args.no_scenes, **figures, **scenes)
    elif args.command == "report":
        from dsp3d.report.command import report_command

        figures = dict(pair=args.pair, point=args.point, cut=args.cut)
        report_command(
            args.runs,
            args.out,
            args.ablation,
            max_points=args.max_points,
            title=args.title,
            **figures,
            **scenes,
        )
    else:
        from dsp3d.visualization.commands import export_command

        export_command(args.runs, args.out, **scenes)


class CommandStopped(Exception):
    """A command that stopped for a reason the user can act on (exit status 1, one line)."""


def _train_setup(args: argparse.Namespace) -> tuple[object, Path]:
    """The config and run folder of ``dsp3d train``, checked before any work: a new run needs an empty
    folder (or --force), a resumed one an unfinished run (dsp3d.workflow.run_folder)."""
    from dsp3d.io.atomic import prepare_output_folder, remove_stale_temporaries
    from dsp3d.workflow.run_folder import check_new_run_folder, check_resumable

    if args.resume and args.force:
        raise ConfigError("--resume continues a run, --force replaces one: give one of them")
    if args.resume:
        out = Path(args.resume)
        check_resumable(out)
        config = load_run_config(out, args.overrides)
        if (out / "weak_labels").is_dir():
            config.data.weak_labels = str(out / "weak_labels")  # exactly the labels it started with
    else:  # a config file, or the defaults (the generated rooms)
        config = load_config(args.config, args.overrides)
        out = Path(args.out or Path("runs") / (Path(args.config).stem if args.config else "default"))
    prepare_output_folder(out)
    for folder in ("checkpoints", "weak_labels"):  # leftovers of a killed write there too
        remove_stale_temporaries(out / folder)
    if not args.resume:
        check_new_run_folder(out, args.force)
    return config, out


def _train_command(config, out: Path, resume: bool, force: bool) -> None:
    """Prepare the data and train one run. Under torchrun this process is one rank of a data-parallel run
    (docs/scale.md): one process per node fills the data cache first, rank 0 reports and writes the run."""
    from dsp3d.training.distributed import process_group
    from dsp3d.training.loop import TrainingDiverged, resolve_device
    from dsp3d.workflow.prepare import prepare_data
    from dsp3d.workflow.run import run_method, score_line
    from dsp3d.workflow.run_folder import clear_run_folder, has_checkpoint

    with process_group(resolve_device(config.train.device)) as world:
        if not world.is_main:
            logging.getLogger("dsp3d").setLevel(logging.WARNING)  # rank 0 reports
        data = world.node_first(lambda: prepare_data(config))
        if resume and not has_checkpoint(out):  # stopped before its first checkpoint: start it again
            log.info("%s: no checkpoint yet; the run starts again with its config and weak labels", out)
            resume = False
        elif force and world.is_main:  # after prepare_data: data.weak_labels may be read from there
            clear_run_folder(out)
        try:
            result = run_method(config, data, out, resume=resume)
        except TrainingDiverged as error:
            lower = f"{config.train.lr / 10:g}"
            raise CommandStopped(
                f"{error}; continue from the last checkpoint with a lower rate: "
                f"dsp3d train --resume {out} --set train.lr={lower}"
            ) from None
        if world.is_main:
            print(f"{score_line(config.train.method, result)}  ({out / 'results.json'})")


def _demo_command(args: argparse.Namespace) -> None:
    from dsp3d.cli.commands import refuse_under_torchrun
    from dsp3d.workflow.demo import run_demo
    from dsp3d.workflow.run import score_line

    refuse_under_torchrun("demo")
    runs = tuple(run.strip() for run in args.runs.split(",") if run.strip())
    results = run_demo(
        args.ratio,
        args.steps,
        args.seed,
        args.out,
        runs,
        args.overrides,
        args.minutes,
        args.jobs,
        args.seeds,
    )
    if args.quiet:
        for run, result in results["runs"].items():
            print(score_line(run, result))


def _ablate_command(args: argparse.Namespace) -> int:
    from dsp3d.cli.commands import ablate_command, refuse_under_torchrun

    refuse_under_torchrun("ablate")
    options = {name: getattr(args, name) for name in ("dataset", "root", "ratio", "minutes", "steps")}
    ablation = ablate_command(
        args.config, args.overrides, options, args.modes, args.seeds, args.out, args.jobs
    )
    if args.quiet:
        for mode, row in ablation["rows"].items():
            print(f"{mode}: mIoU {row['miou_mean']:.1f} +- {row['miou_std']:.1f}")
    if ablation["failed"]:
        progress.shutdown()
        for failure in ablation["failed"]:
            print(
                f"error: ablation run {failure['mode']} seed {failure['seed']} failed: "
                f"{failure['error']} (log: {failure['log']})",
                file=sys.stderr,
            )
        return 1
    return 0


def _predict_and_evaluate(args: argparse.Namespace) -> None:
    if args.command == "predict":
        from dsp3d.cli.commands import predict_command

        predict_command(
            args.checkpoint,
            args.inputs,
            args.out,
            args.fields,
            args.probabilities,
            args.colors,
            args.batch_points,
            args.device,
            force=args.force,
            grid=args.grid,
        )
    else:
        from dsp3d.cli.commands import evaluate_command
        from dsp3d.workflow.run import score_line

        config = load_config(args.config, args.overrides)
        summary = evaluate_command(args.checkpoint, config, args.out)
        if args.quiet:
            for method, result in summary["runs"].items():
                print(score_line(method, result))


def _run(args: argparse.Namespace, hints: dict) -> int:
    """Run the command of ``args``; ``hints["interrupt"]()`` says what to do after a Ctrl-C,
    ``hints["fault"](error)`` after a fault of the machine (out of memory, disk full, a loader worker)."""
    if args.command == "demo":
        _demo_command(args)
    elif args.command == "train":
        config, out = _train_setup(args)
        hints["interrupt"] = lambda: (  # the run's config.yaml is written when training starts
            f"; resume with: dsp3d train --resume {out}"
            if (out / "config.yaml").is_file()
            else "; the run had not started: run the same command again"
        )
        hints["fault"] = lambda error: _train_fault_hint(error, out)
        _train_command(config, out, bool(args.resume), args.force)
    elif args.command == "ablate":
        return _ablate_command(args)
    elif args.command in ("predict", "evaluate"):
        if args.command == "predict":
            listing = Path(args.out) / "predictions.json"
            hints["interrupt"] = lambda: (
                f"; the files finished so far are listed in {listing}" if listing.is_file() else ""
            )
            hints["fault"] = lambda error: hints["interrupt"]()
        else:
            hints["fault"] = lambda error: (
                f"; run it again with --set {error.override}" if isinstance(error, OutOfMemory) else ""
            )
        _predict_and_evaluate(args)
    elif args.command in ("plot", "report", "export"):
        _picture_command(args)
    elif args.command == "superpoints":
        _superpoints_command(args)
    elif args.command == "config":
        print(describe_config(load_config(args.file, args.overrides)))
    elif args.command == "suggest":
        from dsp3d.cli.suggest import suggest_command

        return suggest_command(args)
    return 0


def _train_fault_hint(error: Exception, out: Path) -> str:
    """How to go on after a fault stopped ``dsp3d train``: the resume command (the same command again
    before the run started), with the setting the fault suggests changing; after a refused write, what
    to do about it first."""
    override = getattr(error, "override", None)
    if (out / "config.yaml").is_file():
        again = f"continue with: dsp3d train --resume {out}" + (f" --set {override}" if override else "")
    else:
        again = "run the same command again" + (f" with --set {override}" if override else "")
    if isinstance(error, WriteFailed):
        writable = "make the folder writable"
        first = {errno.EFBIG: "raise the file-size limit", errno.EROFS: writable}
        first |= {errno.EACCES: writable, errno.EPERM: writable}
        return f"; {first.get(error.errno, 'free some space')}, then {again}"
    return f"; {again}"


def _os_error_text(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{(error.strerror or str(error)).lower()}"


def _interrupt_on_sigterm():
    """``kill PID`` (SIGTERM) stops a command as Ctrl-C does: through Python, so that temporary files
    are removed and the one-line message says how to go on. Processes forked from this one (loader
    workers) keep the default: they just end. Returns the handler it replaced (None: none replaced)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    main_pid = os.getpid()

    def interrupt(signum, frame) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _data_warnings_as_lines(show: Callable) -> Callable:
    """``warnings.showwarning`` that logs a problem with the data (DataWarning) as one line,
    ``warning: <file>: <problem>``, not with a line of dsp3d's source; other warnings go to ``show``."""
    from dsp3d.io.errors import DataWarning

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, DataWarning):
            log.warning("%s", message)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def _fail(message: str, status: int) -> int:
    progress.shutdown()
    print(message, file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Every expected failure ends in one line on stderr: ``config error: ...`` or ``error: ...`` (exit
    status 2 for bad input, 1 for a run that stopped), ``interrupted; ...`` after Ctrl-C (130)."""
    args = build_parser().parse_args(argv)
    # Messages and status lines: a live display on a terminal, plain lines otherwise (dsp3d.progress).
    progress.setup(quiet=args.quiet)
    hints: dict[str, Callable] = {}
    previous = _interrupt_on_sigterm()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _data_warnings_as_lines(warnings.showwarning)
            return _run(args, hints)
    except KeyboardInterrupt:
        return _fail(f"interrupted{hints.get('interrupt', str)()}", 130)
    except (OutOfMemory, WriteFailed, RunStopped) as error:  # the machine's limits: the run stopped
        return _fail(f"error: {error}{hints.get('fault', lambda error: '')(error)}", 1)
    except ConfigError as error:
        return _fail(f"config error: {error}", 2)
    except (FileNotFoundError, ValueError) as error:
        return _fail(f"error: {error}", 2)
    except OSError as error:
        if error.errno in STORAGE_ERRNOS:  # a write refused outside dsp3d's writers: the run stopped
            refused = write_failure(error.filename or "a file", error)
            return _fail(f"error: {refused}{hints.get('fault', lambda error: '')(refused)}", 1)
        return _fail(f"error: {_os_error_text(error)}", 2)
    except CommandStopped as error:
        return _fail(f"error: {error}", 1)
    except (MemoryError, RuntimeError) as error:  # out of memory where no setting is known to lower
        if not is_out_of_memory(error):
            raise
        return _fail("error: out of memory; lower --batch-points or the batch_points settings", 1)
    finally:
        progress.teardown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
