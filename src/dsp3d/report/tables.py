"""HTML tables laid out like the paper's: Table 1 (ablation modes over seeds, with the branches of
Table 3) and Table 4 (per-class IoU per run). The best value of each column is bold, as in the paper."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from dsp3d.evaluation.table import S3DIS_TABLE_ORDER, ratio_text
from dsp3d.visualization.runs import RunRecord
from dsp3d.workflow.ablate import REFERENCES, TABLE1_GROUPS, paired_text


@dataclass
class AblationRow:
    """One row of ablation.json: a mode's mIoU over seeds and its branches' mean mIoU."""

    mode: str
    miou_mean: float
    miou_std: float
    miou: list[float]
    branches: dict[str, float] = field(default_factory=dict)
    # reference mode -> dsp3d.workflow.ablate.paired_difference (older ablation.json files: vs_baseline only)
    versus: dict[str, dict] = field(default_factory=dict)


def ablation_rows(data: dict) -> list[AblationRow]:
    """The rows of an ablation.json ({"rows": {mode: {...}}}) in its order."""
    rows = data.get("rows")
    if not isinstance(rows, dict):
        raise ValueError("ablation.json has no 'rows' mapping")
    return [
        AblationRow(
            mode,
            float(row["miou_mean"]),
            float(row.get("miou_std", 0.0)),
            [float(v) for v in row.get("miou", [])],
            {k: float(v) for k, v in row.get("branches", {}).items()},
            dict(row.get("versus") or ({"baseline": row["vs_baseline"]} if row.get("vs_baseline") else {})),
        )
        for mode, row in rows.items()
    ]


def _cell(value: float | None, best: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td>-</td>"
    text = f"{value:.{digits}f}"
    bold = best is not None and round(value, digits) == round(best, digits)
    return f"<td><b>{text}</b></td>" if bold else f"<td>{text}</td>"


def _best(values: list[float | None], digits: int = 1) -> float | None:
    """The column's best (highest) value; None when there is none or it is 0 as shown (every run at
    zero, nothing to single out: bolding the tie would mark them all)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    best = max(present) if present else None
    return None if best is None or round(best, digits) == 0 else best


def table1_html(rows: list[AblationRow], ratio: float | None = None) -> str:
    """Table 1: group, mode, mIoU mean +- std over seeds, per seed, the seed-paired differences to the
    baseline and to two-stage (those the ablation has), and Table 3's branch mIoU."""
    setting = f" ({ratio_text(ratio)} labels)" if ratio is not None else ""
    branches = ("basic", "cross", "intra")
    ranked = [r for r in rows if r.mode != "full"]  # the full-label bound is not a competitor
    best_mean = _best([r.miou_mean for r in ranked])
    best_branch = {b: _best([r.branches.get(b) for r in ranked]) for b in branches}
    head = "".join(f"<th>{b}</th>" for b in branches)
    references = [ref for ref in REFERENCES if any(ref in row.versus for row in rows)] or ["baseline"]
    versus_head = "".join(f"<th>vs {escape(ref)} (paired)</th>" for ref in references)
    lines = [
        '<table class="results">',
        f"<thead><tr><th>group</th><th>mode</th><th>mIoU{escape(setting)}</th><th>std</th>"
        f"<th>per seed</th>{versus_head}{head}</tr></thead><tbody>",
    ]
    for row in rows:
        seeds = ", ".join(f"{v:.1f}" for v in row.miou)
        best = best_mean if row.mode != "full" else None
        cells = "".join(
            _cell(row.branches.get(b), best_branch[b] if row.mode != "full" else None) for b in branches
        )
        lines.append(
            f"<tr><td>{escape(TABLE1_GROUPS.get(row.mode, ''))}</td><td>{escape(row.mode)}</td>"
            f"{_cell(row.miou_mean, best)}<td>{row.miou_std:.1f}</td><td>{seeds}</td>"
            + "".join(
                f"<td>{escape(paired_text(row.versus.get(ref), spread=True))}</td>" for ref in references
            )
            + f"{cells}</tr>"
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def class_columns(class_names: list[str]) -> list[tuple[str, str]]:
    """(class, column title): the paper's order and abbreviations for S3DIS's classes, else as given."""
    if set(class_names) == {name for name, _ in S3DIS_TABLE_ORDER}:
        return list(S3DIS_TABLE_ORDER)
    return [(name, name) for name in class_names]


def table4_html(runs: list[RunRecord]) -> str:
    """Table 4: one row per run with its mIoU, OA and every class's IoU (percent)."""
    columns = class_columns(runs[0].class_names)
    ranked = [r for r in runs if r.method != "full"] or runs
    best_miou = _best([r.miou for r in ranked])
    best_oa = _best([r.oa for r in ranked])
    best_class = {name: _best([r.per_class_iou.get(name) for r in ranked]) for name, _ in columns}
    head = "".join(f'<th title="{escape(name)}">{escape(title)}</th>' for name, title in columns)
    lines = [
        '<table class="results per-class">',
        f"<thead><tr><th>run</th><th>method</th><th>mIoU</th><th>OA</th>{head}</tr></thead><tbody>",
    ]
    for run in runs:
        competing = run in ranked
        cells = "".join(
            _cell(run.per_class_iou.get(name), best_class[name] if competing else None) for name, _ in columns
        )
        lines.append(
            f"<tr><td>{escape(run.name)}</td><td>{escape(run.method)}</td>"
            f"{_cell(run.miou, best_miou if competing else None)}"
            f"{_cell(run.oa, best_oa if competing else None)}{cells}</tr>"
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def training_table_html(runs: list[RunRecord]) -> str:
    """Per run and stage: mode, steps, seconds, the segmentation loss at the start and the end (the term
    every method has: runs compare on it) and, for a stage that adds other terms (DSP's), its total."""
    lines = [
        '<table class="results">',
        "<thead><tr><th>run</th><th>stage</th><th>mode</th><th>steps</th><th>seconds</th>"
        "<th>seg. loss, first</th><th>seg. loss, last</th>"
        "<th>total loss, first</th><th>total loss, last</th></tr></thead><tbody>",
    ]
    for run in runs:
        for index, (stage, losses) in enumerate(zip(run.stages, run.stage_losses(), strict=True)):
            totals = ("", "") if losses.only_seg else (losses.total_first, losses.total_last)
            lines.append(
                f"<tr><td>{escape(run.name)}</td><td>{index + 1}</td><td>{escape(stage.mode)}</td>"
                f"<td>{stage.steps}</td><td>{stage.seconds:.1f}</td>"
                + "".join(_loss_cell(v) for v in (losses.seg_first, losses.seg_last, *totals))
                + "</tr>"
            )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _loss_cell(value: float | str) -> str:
    """A loss to three decimals; '-' when unknown; empty ("") where the stage has no such loss."""
    if isinstance(value, str):
        return "<td></td>"
    return "<td>-</td>" if math.isnan(value) else f"<td>{value:.3f}</td>"
