"""Summarise classifier runs into DVC metrics and render a self-contained HTML report."""

from __future__ import annotations

import base64
import html
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from mvcaug.cells import RunResult
from mvcaug.synthetic_sets import MVC, NO_MVC


@dataclass(frozen=True)
class SampleRow:
    """One class's images for the grid: real ones, synthetic ones and each synthetic's conditioning image."""

    label: str
    real: list[Image.Image]
    synthetic: list[Image.Image]
    conditioning: list[Image.Image]


SHORT = {"default": "baseline", "autoaugment": "aa", "randaugment": "ra", "trivialaugment": "ta"}
PAPER_COLUMNS = ("baseline", "aa", "ra", "ta", "syn", "aa_syn", "ra_syn", "ta_syn")
PAPER_TITLES = {"baseline": "Baseline", "aa": "AA", "ra": "RA", "ta": "TA", "syn": "Syn",
                "aa_syn": "AA+Syn", "ra_syn": "RA+Syn", "ta_syn": "TA+Syn"}
STRATEGY_SUFFIX = {"real": "", "combined": "syn", "rsp": "rsp", "two_phase": "two_phase", "reference": "ref"}


def column_name(baseline: str, strategy: str) -> str:
    """The paper's column names: baseline, aa, ra, syn, aa_syn, ... (rsp and two_phase alike)."""
    short = SHORT[baseline]
    suffix = STRATEGY_SUFFIX[strategy]
    if not suffix:
        return short
    return suffix if short == "baseline" else f"{short}_{suffix}"


def result_column(result: RunResult) -> str:
    """A run's column: column_name, suffixed _no_mvc for the MVC ablation's runs (syn_no_mvc) and _n<k> for
    budget and reference runs (syn_n5, ref_n20)."""
    cell = result.cell
    column = column_name(cell.baseline, cell.strategy)
    column = column if cell.synthetic_set == MVC else f"{column}_{cell.synthetic_set}"
    return f"{column}_n{cell.per_class}" if cell.per_class else column


def summarise(results: Sequence[RunResult]) -> dict:
    """{model: {column: {acc_mean, acc_std, val_acc_mean, runs, gain}}}: `dvc metrics diff` shows it as
    flat keys such as small_cnn.syn.acc_mean; gain is over the real-only run with the same augmentation."""
    metrics: dict = {}
    groups: dict[tuple[str, str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.cell.model, r.cell.baseline, result_column(r)), []).append(r)
    for (model, _, column), runs in sorted(groups.items()):
        accs = [r.test_acc for r in runs]
        metrics.setdefault(model, {})[column] = {
            "acc_mean": round(statistics.fmean(accs), 4),
            "acc_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
            "val_acc_mean": round(statistics.fmean(r.val_acc for r in runs), 4),
            "runs": len(runs),
        }
    for (model, baseline, column), runs in groups.items():
        reference = metrics[model].get(column_name(baseline, "real"))
        if runs[0].cell.strategy != "real" and reference is not None:
            cell = metrics[model][column]
            cell["gain"] = round(cell["acc_mean"] - reference["acc_mean"], 4)
    return metrics


def mean_validation_curves(results: Sequence[RunResult], logs: dict[str, list[float]]) -> dict[str, dict[str, list[float]]]:
    """{model: {grid column: validation accuracy per epoch, averaged over seeds}} from the cells' logs
    ({cell name: values}); a column's curve is as long as its shortest log."""
    per_column: dict[tuple[str, str], list[list[float]]] = {}
    for r in results:
        if r.cell.name in logs:
            per_column.setdefault((r.cell.model, result_column(r)), []).append(logs[r.cell.name])
    curves: dict[str, dict[str, list[float]]] = {}
    for (model, column), runs in per_column.items():
        length = min(len(v) for v in runs)
        curves.setdefault(model, {})[column] = [statistics.fmean(v[i] for v in runs) for i in range(length)]
    return curves


def _cell_text(cell: dict | None) -> str:
    if cell is None:
        return "–"
    gain = f" ({100 * cell['gain']:+.2f})" if "gain" in cell else ""
    return f"{100 * cell['acc_mean']:.2f} ± {100 * cell['acc_std']:.2f}{gain}"


def accuracy_tables(metrics: dict) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """(paper header, paper rows, strategy header, strategy rows) as text cells, for HTML and Markdown."""
    models = sorted(metrics)
    present = [c for c in PAPER_COLUMNS if any(c in metrics[m] for m in models)]
    paper = [[m] + [_cell_text(metrics[m].get(c)) for c in present] for m in models]
    strategies = [s for s in STRATEGY_SUFFIX if any(column_name(b, s) in metrics[m] for m in models for b in SHORT)]
    strategy_rows = []
    for model in models:
        for baseline in SHORT:
            if column_name(baseline, "real") in metrics[model] or any(
                    column_name(baseline, s) in metrics[model] for s in strategies):
                strategy_rows.append([model, baseline] + [
                    _cell_text(metrics[model].get(column_name(baseline, s))) for s in strategies])
    return (["model"] + [PAPER_TITLES[c] for c in present], paper,
            ["model", "augmentation"] + strategies, strategy_rows)


def ablation_table(metrics: dict, mix_steps: tuple[int, int] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the MVC ablation: real only vs combined with P = Q = 0 mixes vs with MVC's, for
    each model and augmentation that has ablation runs. `mix_steps`: the params' (P, Q), for the title."""
    mvc_title = "Syn, MVC" if mix_steps is None else f"Syn, P = {mix_steps[0]}, Q = {mix_steps[1]}"
    rows = []
    for model in sorted(metrics):
        for baseline in SHORT:
            columns = (column_name(baseline, "real"), f"{column_name(baseline, 'combined')}_{NO_MVC}",
                       column_name(baseline, "combined"))
            if columns[1] in metrics[model]:
                rows.append([model, baseline] + [_cell_text(metrics[model].get(c)) for c in columns])
    return ["model", "augmentation", "Baseline (real only)", "Syn, P = Q = 0", mvc_title], rows


ABLATION_NOTE = ("Real + synthetic images generated from unmixed caption embeddings (P = Q = 0) vs from the MVC "
                 "mixes: same fine-tuned model, seeds, conditioning images and classifier settings.")


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _data_uri(image: Image.Image, scale: int) -> str:
    buffer = io.BytesIO()
    image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _img(image: Image.Image, scale: int, title: str = "") -> str:
    return f'<img src="{_data_uri(image, scale)}" title="{html.escape(title)}" alt="{html.escape(title)}">'


def _svg_lines(series: Sequence[tuple[str, Sequence[float]]], width: int, height: int) -> tuple[str, float, float]:
    """(an inline SVG with one polyline per (colour, values), the lowest value, the highest value);
    all lines share the axes, x spanning the longest series."""
    lo = min(min(values) for _, values in series)
    hi = max(max(values) for _, values in series)
    span, longest = (hi - lo) or 1.0, max(len(values) for _, values in series)
    lines = "".join(
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
        + " ".join(f"{i * width / (longest - 1):.1f},{height - (v - lo) * height / span:.1f}" for i, v in enumerate(values))
        + '"/>'
        for colour, values in series
    )
    return f'<svg width="{width}" height="{height}" style="border:1px solid #ccc">{lines}</svg>', lo, hi


def _sparkline(values: Sequence[float], width: int = 480, height: int = 120) -> str:
    """An inline SVG line of a curve (the fine-tuning loss), smoothed by a running mean."""
    if len(values) < 2:
        return ""
    window = max(1, len(values) // 50)
    smooth = [statistics.fmean(values[max(0, i - window) : i + 1]) for i in range(len(values))]
    svg, _, _ = _svg_lines([("#c33", smooth)], width, height)
    return svg + f"<p>loss from {smooth[0]:.3f} to {smooth[-1]:.3f} over {len(values)} steps</p>"


CURVE_COLOURS = ("#c33", "#36c", "#393", "#c80", "#939", "#099", "#666", "#960")


def curves_svg(curves: dict[str, Sequence[float]], width: int = 480, height: int = 160) -> str:
    """Several curves (validation accuracy per epoch, one per grid column) in one inline SVG, with a legend."""
    named = [(name, values, colour) for (name, values), colour
             in zip(sorted((n, v) for n, v in curves.items() if len(v) > 1), CURVE_COLOURS * 8)]
    if not named:
        return ""
    svg, lo, hi = _svg_lines([(colour, values) for _, values, colour in named], width, height)
    legend = " ".join(f'<span style="color:{colour}">&#9632; {html.escape(name)}</span>' for name, _, colour in named)
    return svg + f"<p>{legend} (from {lo:.3f} to {hi:.3f})</p>"


def render_html(metrics: dict, results: Sequence[RunResult], samples: Sequence[SampleRow],
                finetune_losses: Sequence[float], quality: dict | None = None, title: str = "mvcaug report",
                curves: dict[str, dict[str, Sequence[float]]] | None = None,
                mix_steps: tuple[int, int] | None = None) -> str:
    """One HTML file, images inline, readable offline. `curves`: {model: {column: mean val accuracy per epoch}};
    `mix_steps`: the params' (P, Q), for the MVC ablation's table."""
    paper_head, paper_rows, strategy_head, strategy_rows = accuracy_tables(metrics)
    ablation_head, ablation_rows = ablation_table(metrics, mix_steps)
    ablation_html = ""
    if ablation_rows:
        ablation_html = ("<h2>MVC ablation: test accuracy (%), P = Q = 0 vs MVC</h2>\n"
                         f"<p>{html.escape(ABLATION_NOTE)}</p>\n{_html_table(ablation_head, ablation_rows)}")
    run_rows = [[r.cell.model, r.cell.baseline, r.cell.strategy + (" (P = Q = 0)" if r.cell.synthetic_set == NO_MVC else ""),
                 str(r.cell.seed), str(r.best_epoch), f"{100 * r.val_acc:.2f}", f"{100 * r.test_acc:.2f}"] for r in results]
    quality_html = ""
    if quality:
        quality_html = "<h2>Quality of the synthetic set</h2>" + _html_table(*quality_table(quality))
    grid = []
    for row in samples:
        real = "".join(_img(im, 4, f"real {row.label}") for im in row.real)
        synth = "".join(
            f'<span class="pair">{_img(c, 2, "conditioning image")}{_img(s, 4, f"synthetic {row.label}")}</span>'
            for s, c in zip(row.synthetic, row.conditioning)
        )
        grid.append(f"<tr><th>{html.escape(row.label)}</th><td>{real}</td><td>{synth}</td></tr>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:middle}} img{{image-rendering:pixelated;margin:1px}}
.pair{{display:inline-block;margin-right:6px;background:#eef}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Test accuracy (%), mean ± std over seeds (gain over the matching baseline)</h2>
{_html_table(paper_head, paper_rows)}
<h2>Training strategies: real only, combined, RSP, two-phase</h2>
{_html_table(strategy_head, strategy_rows)}
{ablation_html}
{quality_html}
<h2>Real vs synthetic, per class</h2>
<p>Each synthetic image (large) follows its conditioning image (small, shaded).</p>
<table><tr><th>class</th><th>real</th><th>synthetic</th></tr>{''.join(grid)}</table>
<h2>Classifier validation accuracy per epoch (mean over seeds)</h2>
{"".join(f"<h3>{html.escape(model)}</h3>" + curves_svg(c) for model, c in sorted((curves or {}).items()))}
<h2>Denoiser fine-tuning loss</h2>
{_sparkline(finetune_losses)}
<h2>Runs</h2>
{_html_table(["model", "augmentation", "strategy", "seed", "best epoch", "val %", "test %"], run_rows)}
</body></html>
"""


def quality_table(quality: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the synthetic-set measures; text values (e.g. "not computed: ...") as they are."""
    return ["measure", "value"], [[k, f"{v:.4f}" if isinstance(v, (int, float)) else str(v)]
                                  for k, v in sorted(quality.items())]


def metrics_markdown(metrics: dict, mix_steps: tuple[int, int] | None = None, quality: dict | None = None) -> str:
    """The accuracy tables (and the quality table, given it) as Markdown, for report.md and a Prefect artifact."""
    paper_head, paper_rows, strategy_head, strategy_rows = accuracy_tables(metrics)
    ablation_head, ablation_rows = ablation_table(metrics, mix_steps)
    ablation = ""
    if ablation_rows:
        ablation = ("\n## MVC ablation: P = Q = 0 vs MVC\n\n" + ABLATION_NOTE + "\n\n"
                    + _markdown_table(ablation_head, ablation_rows) + "\n")
    return ("## Test accuracy (%), mean ± std over seeds (gain over the matching baseline)\n\n"
            + _markdown_table(paper_head, paper_rows)
            + "\n\n## Training strategies\n\n" + _markdown_table(strategy_head, strategy_rows) + "\n" + ablation
            + ("\n## Quality of the synthetic set\n\n" + _markdown_table(*quality_table(quality)) + "\n" if quality else ""))
