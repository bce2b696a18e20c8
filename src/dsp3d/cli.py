"""The `dsp3d` command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from dsp3d.config import DEMO_STEPS, ConfigError, load_config, load_run_config
from dsp3d.methods import METHODS, TABLE1_MODES
from dsp3d.progress import Console


def _add_config_args(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--config", required=required, help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=0.005 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsp3d", description=__doc__)
    parser.add_argument(
        "--quiet", action="store_true", help="print only results and errors (no progress, no info log)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generated rooms: weak baseline vs DSP vs full supervision")
    demo.add_argument("--ratio", type=float, default=0.01, help="weak-label ratio per class (default 0.01)")
    demo.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps per run, both DSP stages together (default {DEMO_STEPS})",
    )
    demo.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="a time budget instead of --steps: minutes of training for all runs together",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    demo.add_argument(
        "--runs", default="baseline,dsp,full", help="comma-separated runs among baseline,dsp,full"
    )
    demo.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at a time, one torch thread each (default: one per core)",
    )
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    train = sub.add_parser("train", help="train one method from a config, or resume an interrupted run")
    _add_config_args(train, required=False)
    train.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    train.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint",
    )
    train.add_argument(
        "--force", action="store_true", help="replace the run in a non-empty --out folder (default: refuse)"
    )

    ablate = sub.add_parser("ablate", help="Table 1 rows and Table 3 branches over several seeds")
    ablate.add_argument(
        "--dataset", default=None, help="synthetic, s3dis, scannet or folder (default: config's)"
    )
    ablate.add_argument("--root", default=None, help="dataset folder (real datasets)")
    ablate.add_argument("--ratio", type=float, default=None, help="weak-label ratio (default: config's)")
    ablate.add_argument(
        "--minutes", type=float, default=None, help="training minutes of each run (all its stages together)"
    )
    ablate.add_argument(
        "--steps", type=int, default=None, help="optimiser steps of each run, all its stages together"
    )
    ablate.add_argument("--seeds", type=int, default=3)
    ablate.add_argument(
        "--modes",
        default=",".join(TABLE1_MODES),
        help=f"comma-separated among {', '.join(METHODS)} (dsp = csfr-isfr; default: Table 1's rows, "
        f"{','.join(TABLE1_MODES)})",
    )
    ablate.add_argument("--out", default="ablation_out")
    ablate.add_argument(
        "--jobs", type=int, default=1, help="runs at a time, each in its own process (default 1)"
    )
    _add_config_args(ablate, required=False)

    predict = sub.add_parser(
        "predict", help="label every point of clouds of any size (PLY, LAS/LAZ, NPY, TXT)"
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
    predict.add_argument("--colors", action="store_true", help="also write a colour per predicted label")
    predict.add_argument(
        "--batch-points", type=int, default=60000, help="points per inference batch (memory)"
    )
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument(
        "--force", action="store_true", help="replace outputs of the same name in -o (default: refuse)"
    )

    evaluate = sub.add_parser("evaluate", help="evaluate an inference model at full resolution")
    evaluate.add_argument("checkpoint", help="model.pt written by train / demo")
    _add_config_args(evaluate, required=True)
    evaluate.add_argument("--out", default=None, help="where to write results.json")
    _add_picture_commands(sub)
    for command in sub.choices.values():  # --quiet also after the command name (dsp3d train --quiet ...)
        command.add_argument(
            "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only results and errors"
        )
    return parser


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


def _picture_command(args: argparse.Namespace, progress) -> None:
    scenes = dict(scenes=args.scenes, scene_count=args.scene_count, device=args.device, progress=progress)
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
    folder (or --force), a resumed one an unfinished run (dsp3d.run_folder)."""
    from dsp3d.io.atomic import prepare_output_folder, remove_stale_temporaries
    from dsp3d.run_folder import check_new_run_folder, check_resumable

    if args.resume and args.force:
        raise ConfigError("--resume continues a run, --force replaces one: give one of them")
    if args.resume:
        out = Path(args.resume)
        check_resumable(out)
        config = load_run_config(out, args.overrides)
        if (out / "weak_labels").is_dir():
            config.data.weak_labels = str(out / "weak_labels")  # exactly the labels it started with
    elif args.config:
        config = load_config(args.config, args.overrides)
        out = Path(args.out or Path("runs") / Path(args.config).stem)
    else:
        raise ConfigError("train needs --config FILE (a new run) or --resume RUN_DIR")
    prepare_output_folder(out)
    for folder in ("checkpoints", "weak_labels"):  # leftovers of a killed write there too
        remove_stale_temporaries(out / folder)
    if not args.resume:
        check_new_run_folder(out, args.force)
    return config, out


def _train_command(config, out: Path, resume: bool, force: bool, progress) -> None:
    """Prepare the data and train one run. Under torchrun this process is one rank of a data-parallel run
    (docs/scale.md): one process per node fills the data cache first, rank 0 reports and writes the run."""
    from dsp3d.data.prepare import prepare_data
    from dsp3d.run_folder import clear_run_folder, has_checkpoint
    from dsp3d.runs import run_method, score_line
    from dsp3d.training.distributed import process_group
    from dsp3d.training.trainer import TrainingDiverged, resolve_device

    with process_group(resolve_device(config.train.device)) as world:
        if not world.is_main:
            progress = lambda message: None  # noqa: E731
            logging.getLogger("dsp3d").setLevel(logging.WARNING)
        data = world.node_first(lambda: prepare_data(config, progress))
        if resume and not has_checkpoint(out):  # stopped before its first checkpoint: start it again
            progress(f"{out}: no checkpoint yet; the run starts again with its config and weak labels")
            resume = False
        elif force and world.is_main:  # after prepare_data: data.weak_labels may be read from there
            clear_run_folder(out)
        try:
            result = run_method(config, data, out, progress, resume=resume)
        except TrainingDiverged as error:
            lower = f"{config.train.lr / 10:g}"
            raise CommandStopped(
                f"{error}; continue from the last checkpoint with a lower rate: "
                f"dsp3d train --resume {out} --set train.lr={lower}"
            ) from None
        if world.is_main:
            print(f"{score_line(config.train.method, result)}  ({out / 'results.json'})")


def _demo_command(args: argparse.Namespace, progress) -> None:
    from dsp3d.commands import refuse_under_torchrun
    from dsp3d.demo import run_demo
    from dsp3d.runs import score_line

    refuse_under_torchrun("demo")
    runs = tuple(run.strip() for run in args.runs.split(",") if run.strip())
    results = run_demo(
        args.ratio,
        args.steps,
        args.seed,
        args.out,
        runs,
        args.overrides,
        progress,
        args.minutes,
        args.jobs,
    )
    if args.quiet:
        for run, result in results["runs"].items():
            print(score_line(run, result))


def _ablate_command(args: argparse.Namespace, progress) -> int:
    from dsp3d.commands import ablate_command, refuse_under_torchrun

    refuse_under_torchrun("ablate")
    options = {name: getattr(args, name) for name in ("dataset", "root", "ratio", "minutes", "steps")}
    ablation = ablate_command(
        args.config, args.overrides, options, args.modes, args.seeds, args.out, args.jobs, progress
    )
    if args.quiet:
        for mode, row in ablation["rows"].items():
            print(f"{mode}: mIoU {row['miou_mean']:.1f} +- {row['miou_std']:.1f}")
    if ablation["failed"]:
        progress.finish()
        for failure in ablation["failed"]:
            print(
                f"error: ablation run {failure['mode']} seed {failure['seed']} failed: "
                f"{failure['error']} (log: {failure['log']})",
                file=sys.stderr,
            )
        return 1
    return 0


def _predict_and_evaluate(args: argparse.Namespace, progress) -> None:
    if args.command == "predict":
        from dsp3d.commands import predict_command

        predict_command(
            args.checkpoint,
            args.inputs,
            args.out,
            args.fields,
            args.probabilities,
            args.colors,
            args.batch_points,
            args.device,
            progress,
            force=args.force,
        )
    else:
        from dsp3d.commands import evaluate_command
        from dsp3d.runs import score_line

        config = load_config(args.config, args.overrides)
        summary = evaluate_command(args.checkpoint, config, args.out, progress)
        if args.quiet:
            for method, result in summary["runs"].items():
                print(score_line(method, result))


def _run(args: argparse.Namespace, progress, interrupted: dict) -> int:
    """Run the command of ``args``; ``interrupted["hint"]()`` says what to do after a Ctrl-C."""
    if args.command == "demo":
        _demo_command(args, progress)
    elif args.command == "train":
        config, out = _train_setup(args)
        interrupted["hint"] = lambda: (  # the run's config.yaml is written when training starts
            f"; resume with: dsp3d train --resume {out}"
            if (out / "config.yaml").is_file()
            else "; the run had not started: run the same command again"
        )
        _train_command(config, out, bool(args.resume), args.force, progress)
    elif args.command == "ablate":
        return _ablate_command(args, progress)
    elif args.command in ("predict", "evaluate"):
        if args.command == "predict":
            listing = Path(args.out) / "predictions.json"
            interrupted["hint"] = lambda: (
                f"; the files finished so far are listed in {listing}" if listing.is_file() else ""
            )
        _predict_and_evaluate(args, progress)
    elif args.command in ("plot", "report", "export"):
        _picture_command(args, progress)
    return 0


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
    """``warnings.showwarning`` that prints a problem with the data (DataWarning) as one line,
    ``warning: <file>: <problem>``, not with a line of dsp3d's source; other warnings go to ``show``."""
    from dsp3d.io.errors import DataWarning

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, DataWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def _fail(progress, message: str, status: int) -> int:
    progress.finish()
    print(message, file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Every expected failure ends in one line on stderr: ``config error: ...`` or ``error: ...`` (exit
    status 2 for bad input, 1 for a run that stopped), ``interrupted; ...`` after Ctrl-C (130)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s: %(message)s"
    )
    # Progress: a status line redrawn in place on a terminal, plain lines otherwise (dsp3d.progress).
    progress = Console(quiet=args.quiet)
    interrupted: dict[str, Callable[[], str]] = {}
    previous = _interrupt_on_sigterm()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _data_warnings_as_lines(warnings.showwarning)
            return _run(args, progress, interrupted)
    except KeyboardInterrupt:
        return _fail(progress, f"interrupted{interrupted.get('hint', str)()}", 130)
    except ConfigError as error:
        return _fail(progress, f"config error: {error}", 2)
    except (FileNotFoundError, ValueError) as error:
        return _fail(progress, f"error: {error}", 2)
    except OSError as error:
        return _fail(progress, f"error: {_os_error_text(error)}", 2)
    except CommandStopped as error:
        return _fail(progress, f"error: {error}", 1)
    except MemoryError:
        return _fail(progress, "error: out of memory; lower --batch-points or the batch_points settings", 1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
