"""`dsp3d ablate`: the paper's Table 1 rows (and Table 3 branches), each over several seeds.

Runs (mode x seed) go one after the other in this process (``jobs=1``), or in ``jobs`` spawned
processes: the data is prepared once here (the preprocessing cache), each process reads it back from the
cache, trains with ``cpu_count // jobs`` threads (on CUDA the runs share the GPU) and logs to
``out/MODE/seedS/log.txt``; one line is printed per finished run. Either way every run writes its own
folder ``out/MODE/seedS`` and ``ablation.json`` / ``ablation.md`` are rewritten (atomically) after every
finished run. In parallel a failed run does not stop the others; it is reported and listed under
``failed`` in the result and in ablation.json.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from dsp3d.config import Config, ConfigError
from dsp3d.evaluation.table import ratio_text
from dsp3d.io.atomic import atomic_write_json, atomic_write_text, prepare_output_folder
from dsp3d.methods import METHOD_ALIASES, METHODS, TABLE1_MODES, UNLABELLED_LOSSES
from dsp3d.workflow import parallel
from dsp3d.workflow.parallel import RunJob
from dsp3d.workflow.prepare import prepare_data, require_test_labels
from dsp3d.workflow.run import resolve_neighbour_caps, run_method

log = logging.getLogger("dsp3d")
__all__ = [
    "REFERENCES",
    "TABLE1_MODES",
    "ablation_markdown",
    "ablation_rows",
    "paired_difference",
    "paired_text",
    "run_ablation",
]
TABLE1_GROUPS = {
    "baseline": "",
    "two-stage": "control",
    "csfr": "one stage",
    "isfr": "one stage",
    "joint": "one stage",
    "isfr-csfr": "two stage",
    "csfr-isfr": "two stage",
    "full": "full labels",
    # the other weak-supervision methods, alone and on DSP's stages or its control's
    **{
        method: "other methods"
        for loss in UNLABELLED_LOSSES
        for method in (loss, f"dsp+{loss}", f"two-stage+{loss}")
    },
}
# Every row is compared seed by seed with these rows, when the ablation has them: the baseline, and DSP's
# own schedule without its modules (a gain two-stage shares is the schedule's, not the modules').
REFERENCES = ("baseline", "two-stage")


def ablation_markdown(rows: dict[str, dict], ratio: float, budget: str = "") -> str:
    """The table of ablation.md: a row per mode, its seeds, and its paired differences to REFERENCES."""
    present = [ref for ref in REFERENCES if ref in rows]
    refs = "".join(f" vs {ref} (paired) |" for ref in present)
    title = f"mIoU mean ({ratio_text(ratio)} labels{', ' + budget if budget else ''})"
    lines = [
        f"| group | mode | {title} | std | per seed |{refs} basic | cross | intra |",
        "|---|---|---|---|---|" + "---|" * len(present) + "---|---|---|",
    ]
    for mode, row in rows.items():
        branches = row.get("branches", {})
        cells = [f"{branches[b]:.1f}" if b in branches else "-" for b in ("basic", "cross", "intra")]
        seeds = ", ".join(f"{v:.1f}" for v in row["miou"])
        versus = "".join(f" {paired_text(row.get('versus', {}).get(ref), spread=True)} |" for ref in present)
        lines.append(
            f"| {TABLE1_GROUPS.get(mode, '')} | {mode} | {row['miou_mean']:.1f} | {row['miou_std']:.1f} "
            f"| {seeds} |{versus} " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def paired_text(versus: dict | None, spread: bool = False) -> str:
    """A paired_difference as table text: the mean difference, with its standard error and the seeds
    above when there is more than one seed; "-" without one. spread: add "beyond the spread" where the
    difference exceeds the seed spread (never with one seed)."""
    if not versus:
        return "-"
    text = f"{versus['mean']:+.1f}"
    if versus.get("se") is not None:
        text += f" (SE {versus['se']:.1f}, {versus['above']} of {len(versus['per_seed'])} above)"
    if spread and versus.get("beyond_spread"):
        text += ", beyond the spread"
    return text


def ablation_rows(results: dict[tuple[str, int], dict], modes: tuple[str, ...], seeds: int) -> dict:
    """Table rows of the finished runs, modes in the given order, per-seed values in seed order; a mode
    with no finished run yet has no row. Every row also gets ``versus``: its paired_difference to each
    row of REFERENCES present (not to itself)."""
    rows: dict[str, dict] = {}
    for mode in modes:
        finished = [seed for seed in range(seeds) if (mode, seed) in results]
        if not finished:
            continue
        done = [results[(mode, seed)] for seed in finished]
        per_seed = [result["miou"] for result in done]
        branches: dict[str, list[float]] = {}
        for result in done:
            for branch, value in result.get("branches", {}).items():
                branches.setdefault(branch, []).append(value)
        rows[mode] = {
            "miou_mean": float(np.mean(per_seed)),
            "miou_std": float(np.std(per_seed)),
            "miou": per_seed,
            "seeds": finished,
            "branches": {branch: float(np.mean(values)) for branch, values in branches.items()},
        }
    for mode, row in rows.items():
        versus = {ref: paired_difference(row, rows[ref]) for ref in REFERENCES if ref in rows and ref != mode}
        row["versus"] = {ref: value for ref, value in versus.items() if value is not None}
    return rows


def paired_difference(row: dict, reference: dict) -> dict | None:
    """A row against a reference row on the seeds both finished (the same seed: the same weak labels and
    sphere stream, so the difference removes part of the seed's luck); None without a common seed.

    per_seed: row - reference per common seed; mean; se: standard error of that mean (std with ddof 1
    over sqrt(n); None for one seed); above: seeds where the row is higher; beyond_spread: with two seeds
    or more, the row's mean over the common seeds exceeds the reference's by more than either one's spread
    between seeds (population std); with one seed there is no spread to exceed, so always False.
    """
    common = [seed for seed in row["seeds"] if seed in reference["seeds"]]
    if not common:
        return None
    ours = np.array([row["miou"][row["seeds"].index(seed)] for seed in common])
    theirs = np.array([reference["miou"][reference["seeds"].index(seed)] for seed in common])
    diff = ours - theirs
    spread = max(float(np.std(ours)), float(np.std(theirs)))
    several = len(diff) > 1
    return {
        "seeds": common,
        "per_seed": [float(d) for d in diff],
        "mean": float(diff.mean()),
        "se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if several else None,
        "above": int((diff > 0).sum()),
        "beyond_spread": bool(several and ours.mean() - theirs.mean() > spread),
    }


def _run_config(config: Config, mode: str, seed: int) -> Config:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, method=mode, seed=seed))


def run_ablation(
    config: Config,
    modes: tuple[str, ...],
    seeds: int,
    out: str | Path,
    jobs: int = 1,
    threads: int | None = None,
) -> dict:
    """Every mode over seeds 0..seeds-1 on the same data and the same weak labels per seed.

    jobs: runs at a time, each in its own spawned process (1: one after the other in this process).
    threads: torch threads of each such process (default: CPU cores // jobs).
    Returns ``{"rows": ..., "failed": [{"mode", "seed", "error", "log"}, ...]}``; ``failed`` stays empty
    with jobs=1, where an error stops the ablation as it stops a run.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    modes = tuple(METHOD_ALIASES.get(mode, mode) for mode in modes)
    unknown = [mode for mode in modes if mode not in METHODS]
    if unknown or not modes:
        raise ConfigError(f"--modes: {', '.join(unknown) or 'none given'}; choose among {', '.join(METHODS)}")
    out = prepare_output_folder(out)  # writable, checked before the data is prepared
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, branches=True))
    data = prepare_data(config)
    require_test_labels(config, data.test, "an ablation compares scores")
    config = resolve_neighbour_caps(config, data.train)  # calibrated once ("auto"), the same for every run
    ablation = Ablation(config, modes, seeds, out)
    jobs = min(jobs, len(ablation.runs))
    if jobs == 1:
        ablation.threads = _torch_threads()
        ablation.run_here(data)
    else:
        ablation.threads = threads or max(1, parallel.cpu_count() // jobs)
        ablation.run_in_workers(jobs)
    log.info("\n%s", ablation_markdown(ablation.rows, config.data.ratio, budget_text(config)))
    if ablation.failed:
        names = ", ".join(f"{f['mode']} seed {f['seed']}" for f in ablation.failed)
        log.warning("%d of %d runs failed: %s", len(ablation.failed), len(ablation.runs), names)
    return {"rows": ablation.rows, "failed": ablation.failed}


class Ablation:
    """The runs of an ablation, their results so far, and ablation.json / ablation.md written after
    every finished run (atomically)."""

    def __init__(self, config: Config, modes: tuple[str, ...], seeds: int, out: Path):
        self.config, self.modes, self.seeds, self.out = config, modes, seeds, out
        self.runs = [(mode, seed) for mode in modes for seed in range(seeds)]
        self.results: dict[tuple[str, int], dict] = {}
        self.failed: list[dict] = []
        self.rows: dict[str, dict] = {}
        self.threads = 1

    def run_dir(self, mode: str, seed: int) -> Path:
        return self.out / mode / f"seed{seed}"

    def run_here(self, data) -> None:
        for mode, seed in self.runs:
            log.info("\n== %s, seed %d ==", mode, seed)
            config = _run_config(self.config, mode, seed)
            self.results[(mode, seed)] = run_method(config, data, self.run_dir(mode, seed))
            self.record()

    def run_in_workers(self, jobs: int) -> None:
        log.info(
            "%d runs, %d at a time (%d thread(s) each); each logs to %s/MODE/seedS/log.txt",
            len(self.runs),
            jobs,
            self.threads,
            self.out,
        )
        run_list = [
            RunJob(f"{mode} s{seed}", _run_config(self.config, mode, seed), self.run_dir(mode, seed))
            for mode, seed in self.runs
        ]
        for done, (job, result) in enumerate(parallel.run_jobs(run_list, jobs, self.threads), 1):
            mode, seed = job.config.train.method, job.config.train.seed
            name = f"[{done}/{len(self.runs)}] {mode} seed {seed}"
            run_log = self.run_dir(mode, seed) / "log.txt"
            if "error" in result:
                self.failed.append(
                    {"mode": mode, "seed": seed, "error": result["error"], "log": str(run_log)}
                )
                log.warning("%s FAILED: %s (log: %s)", name, result["error"], run_log)
            else:
                self.results[(mode, seed)] = result
                log.info(
                    "%s: mIoU %.1f  OA %.1f  (%.0f s)", name, result["miou"], result["oa"], result["seconds"]
                )
            self.record()

    def record(self) -> None:
        self.rows = ablation_rows(self.results, self.modes, self.seeds)
        summary = {
            "ratio": self.config.data.ratio,
            "dataset": self.config.data.dataset,
            "budget": budget_text(self.config),
            "threads": self.threads,
            "rows": self.rows,
        }
        if self.failed:
            summary["failed"] = self.failed
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(summary, self.out / "ablation.json")
        table = ablation_markdown(self.rows, self.config.data.ratio, budget_text(self.config))
        atomic_write_text(table + "\n", self.out / "ablation.md")


def budget_text(config: Config) -> str:
    """Each run's budget, as the tables name it: "600 steps" or "5.0 min" (all stages together)."""
    if config.train.minutes > 0:
        return f"{config.train.minutes:.1f} min"
    return f"{config.train.steps} steps"


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
