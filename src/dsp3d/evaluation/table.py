"""Text tables laid out like the paper's Table 4 (per-class IoU) and Table 1 (ablation rows)."""

from __future__ import annotations

# The paper's column order and abbreviations for S3DIS (Table 4); other datasets use their own order.
S3DIS_TABLE_ORDER = [
    ("ceiling", "ceil."),
    ("floor", "floor"),
    ("wall", "wall"),
    ("beam", "beam"),
    ("column", "col."),
    ("window", "wind."),
    ("door", "door"),
    ("chair", "chair"),
    ("table", "table"),
    ("bookcase", "book."),
    ("sofa", "sofa"),
    ("board", "board"),
    ("clutter", "clut."),
]


def ratio_text(ratio: float) -> str:
    """A weak-label ratio as a percentage with the digits it needs: 0.01 -> "1%", 0.001 -> "0.1%"."""
    return f"{ratio * 100:.4g}%"


def _columns(class_names: list[str]) -> list[tuple[str, str]]:
    if set(class_names) == {name for name, _ in S3DIS_TABLE_ORDER}:
        return S3DIS_TABLE_ORDER
    return [(name, name[:6]) for name in class_names]


def per_class_table(runs: dict[str, dict], class_names: list[str], setting: str = "") -> str:
    """One row per run: setting, model, mIoU, then the IoU of every class (percent). Runs that carry
    ``miou_std`` (a mean over seeds: the demo) get a column ``sd`` after mIoU with it."""
    columns = _columns(class_names)
    spread = any(result.get("miou_std") is not None for result in runs.values())
    header = f"{'setting':<14}{'model':<12}{'mIoU':>6}" + (f"{'sd':>6}" if spread else "")
    header += "".join(f"{abbr:>7}" for _, abbr in columns)
    lines = [header, "-" * len(header)]
    for run, result in runs.items():
        row_setting = "full labels" if run == "full" else setting
        cells = []
        for name, _ in columns:
            value = result["per_class_iou"].get(name)
            cells.append(f"{'-':>7}" if value is None else f"{value:7.1f}")
        miou = f"{'-':>6}" if result["miou"] is None else f"{result['miou']:6.1f}"  # None: not scored
        if spread:
            std = result.get("miou_std")
            miou += f"{'-':>6}" if std is None else f"{std:6.1f}"
        lines.append(f"{row_setting:<14}{run:<12}{miou}" + "".join(cells))
    return "\n".join(lines)
