"""The report page: one HTML file with everything inline (styles, plots as base64 PNG, the viewer's
script and its data), so it opens offline, from an e-mail or a CI artefact, and never fetches anything."""

from __future__ import annotations

import base64
import datetime
import re
from dataclasses import dataclass, field
from html import escape
from importlib import resources

from dsp3d.report.tables import AblationRow, table1_html, table4_html, training_table_html
from dsp3d.report.viewer import script_json
from dsp3d.visualization.plotset import Plot
from dsp3d.visualization.runs import RunRecord

VIEWER_HTML = """
<div id="viewer" data-state="loading">
  <div class="viewer-bar">
    <span>colour by
      <button type="button" data-set-mode="truth">ground truth</button>
      <button type="button" data-set-mode="prediction" aria-pressed="true">prediction</button>
      <button type="button" data-set-mode="error">errors</button>
      <button type="button" data-set-mode="rgb">input colour</button>
    </span>
    <label>run <select class="viewer-run"></select></label>
    <label>scene <select class="viewer-scene"></select></label>
    <label>point size <input class="viewer-size" type="range" min="1" max="8" step="0.5" value="2"></label>
    <label>height clip
      <input class="viewer-clip" type="range" min="0.05" max="1" step="0.01" value="1"></label>
  </div>
  <canvas></canvas>
  <div class="viewer-status">loading the viewer...</div>
  <div class="viewer-legend"></div>
  <div class="hint">drag: rotate &middot; shift-drag or right-drag: pan &middot; wheel: zoom &middot;
    double-click: reset the view &middot; height clip: hide the ceiling</div>
</div>
"""


@dataclass
class ReportContent:
    """What goes on the page. ``viewer``: the data of viewer_data, or None for a page without it."""

    title: str
    runs: list[RunRecord]
    plots: list[Plot] = field(default_factory=list)
    ablation: list[AblationRow] | None = None
    ablation_ratio: float | None = None
    viewer: dict | None = None
    notes: list[str] = field(default_factory=list)


def asset(name: str) -> str:
    """A file shipped beside this module (viewer.js, report.css), to be inlined."""
    text = resources.files("dsp3d.report").joinpath(name).read_text(encoding="utf-8")
    # Inlined into <script> / <style>: their closing tag inside the text would end them early.
    if re.search(r"</(script|style)", text, re.IGNORECASE):
        raise ValueError(f"{name} contains a closing script or style tag and cannot be inlined")
    return text


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure><img alt="{escape(plot.caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(plot.caption)}</figcaption></figure>"
    )


def _plot_section(title: str, plots: list[Plot], anchor: str) -> str:
    if not plots:
        return ""
    return f'<h2 id="{anchor}">{escape(title)}</h2>\n' + "\n".join(_figure(p) for p in plots)


def render_page(content: ReportContent) -> str:
    """The complete HTML document."""
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    folders = ", ".join(escape(str(run.path)) for run in content.runs)
    by_kind: dict[str, list[Plot]] = {}
    for plot in content.plots:
        by_kind.setdefault(plot.kind, []).append(plot)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(content.title)}</title>",
        f"<style>{asset('report.css')}</style></head><body><main>",
        f"<h1>{escape(content.title)}</h1>",
        f'<p class="meta">generated {generated} by dsp3d report from {folders}</p>',
    ]
    parts += [f'<p class="meta">{escape(note)}</p>' for note in content.notes]
    if content.ablation:
        parts.append("<h2 id=\"table1\">Ablation (as the paper's Table 1, with Table 3's branches)</h2>")
        parts.append(
            '<div class="scroll">' + table1_html(content.ablation, content.ablation_ratio) + "</div>"
        )
        parts.append(
            '<p class="hint">mIoU (%) on the test scenes, mean and standard deviation over seeds; basic / '
            "cross / intra: the mIoU of each decoder branch. Best weak-label value in bold.</p>"
        )
    parts.append('<h2 id="table4">Per-class IoU (as the paper\'s Table 4)</h2>')
    parts.append('<div class="scroll">' + table4_html(content.runs) + "</div>")
    parts.append(
        '<p class="hint">IoU (%) per class on every point of the test scenes. '
        "Best value in bold, fully supervised runs left out of the ranking.</p>"
    )
    parts.append('<h2 id="training">Training</h2>')
    parts.append('<div class="scroll">' + training_table_html(content.runs) + "</div>")
    parts.append(
        '<p class="hint">seg.: the segmentation loss on the points a run trains on, the term every '
        "method has, so runs compare on it. total: what a stage that adds terms minimised (DSP: seg. "
        "plus the cross / intra branches' losses and the regularisers), empty where seg. is all. "
        "First / last: the first and last records of metrics.jsonl.</p>"
    )
    parts.append(_plot_section("Training curves", by_kind.get("curves", []), "curves"))
    parts.append(_plot_section("Per-class IoU", by_kind.get("iou", []), "iou"))
    parts.append(_plot_section("Confusion matrices", by_kind.get("confusion", []), "confusion"))
    if content.viewer is not None:
        parts.append('<h2 id="viewer-section">Test scenes in 3D</h2>')
        parts.append(VIEWER_HTML)
    parts.append(_plot_section("Test scenes, rendered", by_kind.get("scene", []), "renders"))
    parts.append(_plot_section("Affinity maps (the paper's Fig. 4)", by_kind.get("affinity", []), "affinity"))
    parts.append(
        _plot_section("Superpoints and propagated labels", by_kind.get("superpoints", []), "superpoints")
    )
    if content.viewer is not None:
        parts.append(
            f'<script type="application/json" id="dsp3d-data">{script_json(content.viewer)}</script>'
        )
        parts.append(f"<script>{asset('viewer.js')}</script>")
    parts.append("</main></body></html>")
    return "\n".join(part for part in parts if part)
