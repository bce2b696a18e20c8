"""`dsp3d ablate`: the paper's Table 1 rows (and Table 3 branches), each over several seeds."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dsp3d.config import TABLE1_MODES, Config
from dsp3d.data.prepare import prepare_data
from dsp3d.runs import atomic_write_json, run_method

__all__ = ["TABLE1_MODES", "ablation_markdown", "run_ablation"]
TABLE1_GROUPS = {
    "baseline": "",
    "csfr": "one stage",
    "isfr": "one stage",
    "joint": "one stage",
    "isfr-csfr": "two stage",
    "csfr-isfr": "two stage",
    "full": "full labels",
}


def ablation_markdown(rows: dict[str, dict], ratio: float) -> str:
    lines = [
        f"| group | mode | mIoU mean ({ratio:.0%} labels) | std | per seed | basic | cross | intra |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in rows.items():
        branches = row.get("branches", {})
        cells = [f"{branches[b]:.1f}" if b in branches else "-" for b in ("basic", "cross", "intra")]
        seeds = ", ".join(f"{v:.1f}" for v in row["miou"])
        lines.append(
            f"| {TABLE1_GROUPS.get(mode, '')} | {mode} | {row['miou_mean']:.1f} | {row['miou_std']:.1f} "
            f"| {seeds} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def run_ablation(
    config: Config,
    modes: tuple[str, ...],
    seeds: int,
    out: str | Path,
    progress: Callable[[str], None] = print,
) -> dict:
    """Every mode over seeds 0..seeds-1 on the same data and the same weak labels per seed."""
    out = Path(out)
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, branches=True))
    data = prepare_data(config, progress)
    rows: dict[str, dict] = {}
    for mode in modes:
        per_seed, branches = [], {}
        for seed in range(seeds):
            run_config = dataclasses.replace(
                config, train=dataclasses.replace(config.train, method=mode, seed=seed)
            )
            progress(f"\n== {mode}, seed {seed} ==")
            result = run_method(run_config, data, out / mode / f"seed{seed}", progress)
            per_seed.append(result["miou"])
            for branch, value in result.get("branches", {}).items():
                branches.setdefault(branch, []).append(value)
            rows[mode] = {
                "miou_mean": float(np.mean(per_seed)),
                "miou_std": float(np.std(per_seed)),
                "miou": per_seed,
                "branches": {branch: float(np.mean(values)) for branch, values in branches.items()},
            }
            atomic_write_json(
                {"ratio": config.data.ratio, "dataset": config.data.dataset, "rows": rows},
                out / "ablation.json",
            )
    table = ablation_markdown(rows, config.data.ratio)
    (out / "ablation.md").write_text(table + "\n")
    progress("\n" + table)
    return {"rows": rows}
