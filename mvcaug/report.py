"""Summarise classifier runs into DVC metrics and render a self-contained HTML report."""

from __future__ import annotations

import base64
import html
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from mvcaug.train import RunResult


@dataclass(frozen=True)
class SampleRow:
    """One class's images for the grid: real ones, synthetic ones and each synthetic's conditioning image."""

    label: str
    real: list[Image.Image]
    synthetic: list[Image.Image]
    conditioning: list[Image.Image]


def summarise(results: Sequence[RunResult]) -> dict:
    """{setting: {acc_mean, acc_std, val_acc_mean, runs}} plus the gain of real+synthetic over real."""
    metrics: dict = {}
    for setting in sorted({r.setting for r in results}):
        runs = [r for r in results if r.setting == setting]
        accs = [r.test_acc for r in runs]
        metrics[setting] = {
            "acc_mean": round(statistics.fmean(accs), 4),
            "acc_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
            "val_acc_mean": round(statistics.fmean(r.val_acc for r in runs), 4),
            "runs": len(runs),
        }
    if "real" in metrics and "real+synthetic" in metrics:
        metrics["gain"] = round(metrics["real+synthetic"]["acc_mean"] - metrics["real"]["acc_mean"], 4)
    return metrics


def _data_uri(image: Image.Image, scale: int) -> str:
    buffer = io.BytesIO()
    image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _img(image: Image.Image, scale: int, title: str = "") -> str:
    return f'<img src="{_data_uri(image, scale)}" title="{html.escape(title)}" alt="{html.escape(title)}">'


def _sparkline(values: Sequence[float], width: int = 480, height: int = 120) -> str:
    """An inline SVG line of a curve (the fine-tuning loss), smoothed by a running mean."""
    if len(values) < 2:
        return ""
    window = max(1, len(values) // 50)
    smooth = [statistics.fmean(values[max(0, i - window) : i + 1]) for i in range(len(values))]
    lo, hi = min(smooth), max(smooth)
    span = (hi - lo) or 1.0
    points = " ".join(
        f"{i * width / (len(smooth) - 1):.1f},{height - (v - lo) * height / span:.1f}" for i, v in enumerate(smooth)
    )
    return (f'<svg width="{width}" height="{height}" style="border:1px solid #ccc">'
            f'<polyline fill="none" stroke="#c33" stroke-width="1.5" points="{points}"/></svg>'
            f"<p>loss from {smooth[0]:.3f} to {smooth[-1]:.3f} over {len(values)} steps</p>")


def render_html(metrics: dict, results: Sequence[RunResult], samples: Sequence[SampleRow],
                finetune_losses: Sequence[float], title: str = "mvcaug report") -> str:
    """One HTML file, images inline, readable offline."""
    rows = []
    for setting, m in metrics.items():
        if isinstance(m, dict):
            rows.append(f"<tr><td>{html.escape(setting)}</td><td>{100 * m['acc_mean']:.2f} ± "
                        f"{100 * m['acc_std']:.2f}</td><td>{100 * m['val_acc_mean']:.2f}</td><td>{m['runs']}</td></tr>")
    gain = metrics.get("gain")
    gain_line = f"<p><b>Gain of real+synthetic over real: {100 * gain:+.2f} points.</b></p>" if gain is not None else ""
    run_rows = "".join(
        f"<tr><td>{html.escape(r.setting)}</td><td>{r.seed}</td><td>{r.best_epoch}</td>"
        f"<td>{100 * r.val_acc:.2f}</td><td>{100 * r.test_acc:.2f}</td></tr>" for r in results
    )
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
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:middle}} img{{image-rendering:pixelated;margin:1px}}
.pair{{display:inline-block;margin-right:6px;background:#eef}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Test accuracy (%), mean ± std over seeds</h2>
<table><tr><th>training set</th><th>test accuracy</th><th>val accuracy</th><th>seeds</th></tr>{''.join(rows)}</table>
{gain_line}
<h2>Runs</h2>
<table><tr><th>setting</th><th>seed</th><th>best epoch</th><th>val %</th><th>test %</th></tr>{run_rows}</table>
<h2>Real vs synthetic, per class</h2>
<p>Each synthetic image (large) follows its conditioning image (small, shaded).</p>
<table><tr><th>class</th><th>real</th><th>synthetic</th></tr>{''.join(grid)}</table>
<h2>Denoiser fine-tuning loss</h2>
{_sparkline(finetune_losses)}
</body></html>
"""


def metrics_markdown(metrics: dict) -> str:
    """The accuracy table as Markdown, for a Prefect artifact or a terminal."""
    lines = ["| training set | test accuracy (%) | seeds |", "| --- | --- | --- |"]
    for setting, m in metrics.items():
        if isinstance(m, dict):
            lines.append(f"| {setting} | {100 * m['acc_mean']:.2f} ± {100 * m['acc_std']:.2f} | {m['runs']} |")
    if "gain" in metrics:
        lines.append(f"\nGain of real+synthetic over real: {100 * metrics['gain']:+.2f} points.")
    return "\n".join(lines)
