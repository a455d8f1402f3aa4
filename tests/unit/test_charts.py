"""The inline SVG charts: valid XML, one line per series and one band per banded series, points placed by
their x value, escaped names, the same bytes for the same input."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from mvcaug.reporting.charts import MAX_MARKERS, Series, indexed, line_chart, nice_ticks, running_mean

SVG = "{http://www.w3.org/2000/svg}"
# Images per class on an uneven scale, given out of order, with 95% bands on the real curve.
REAL = Series("real", "#c33", [(10, 0.03, 0.02, 0.04), (0, 0.0, 0.0, 0.0), (20, 0.046, 0.03, 0.06), (5, 0.02, 0.01, 0.03)])
SYNTHETIC = Series("a<b & \"c\"", "#36c", [(0, 0.0), (5, 0.01), (10, 0.02), (20, 0.018)])


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def coordinates(element: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in element.get("points").split()]


def test_one_line_per_series_and_one_band_per_series_with_bounds():
    root = parse(line_chart([REAL, SYNTHETIC], "extra images per class", "gain"))
    assert len(root.findall(f"{SVG}polyline")) == 2
    bands = root.findall(f"{SVG}polygon")
    assert len(bands) == 1 and bands[0].get("fill") == "#c33"
    assert len(coordinates(bands[0])) == 2 * len(REAL.points)  # up along the highs, back along the lows


def test_points_are_placed_in_order_by_x_value():
    root = parse(line_chart([REAL, SYNTHETIC], "extra images per class", "gain"))
    for line in root.findall(f"{SVG}polyline"):
        xs = [x for x, _ in coordinates(line)]
        assert xs == sorted(xs)
        # x = 0, 5, 10, 20: 5 lies a quarter of the way to 20, 10 halfway (to the 0.1 px of the output).
        assert xs[1] - xs[0] == pytest.approx((xs[3] - xs[0]) / 4, abs=0.1)
        assert xs[2] - xs[0] == pytest.approx((xs[3] - xs[0]) / 2, abs=0.1)
    real_line = root.findall(f"{SVG}polyline")[0]
    ys = [y for _, y in coordinates(real_line)]
    assert ys == sorted(ys, reverse=True)  # the real gains rise with x, so they climb the image
    band = coordinates(root.find(f"{SVG}polygon"))
    high_at_20, low_at_20 = band[3][1], band[4][1]
    assert high_at_20 < ys[3] < low_at_20  # the band holds its line


def test_uneven_x_values_are_the_x_ticks():
    root = parse(line_chart([REAL], "extra images per class", "gain"))
    labels = [t.text for t in root.findall(f"{SVG}text")]
    for tick in ("0", "5", "10", "20"):
        assert tick in labels


def test_legend_names_are_escaped():
    svg = line_chart([REAL, SYNTHETIC], "x < y", "gain & loss", title="<b>title</b>")
    assert "a&lt;b &amp; &quot;c&quot;" in svg and "<b>" not in svg
    texts = [t.text for t in parse(svg).findall(f"{SVG}text")]
    assert 'a<b & "c"' in texts and "real" in texts
    assert {"x < y", "gain & loss", "<b>title</b>"} <= set(texts)


def test_identical_input_gives_identical_output():
    first = line_chart([REAL, SYNTHETIC], "k", "gain", title="t")
    second = line_chart([Series(s.name, s.colour, list(s.points)) for s in (REAL, SYNTHETIC)], "k", "gain", title="t")
    assert first == second


def test_a_plain_curve_per_epoch_has_no_band_and_a_marker_per_point():
    root = parse(line_chart([Series("val", "#393", indexed([0.5, 0.6, 0.65, 0.7]))], "epoch", "accuracy"))
    assert root.find(f"{SVG}polygon") is None
    assert len(root.findall(f"{SVG}circle")) == 4
    xs = [x for x, _ in coordinates(root.find(f"{SVG}polyline"))]
    assert np.allclose(np.diff(xs), xs[1] - xs[0], atol=0.1)  # evenly spaced epochs


def test_a_long_curve_is_drawn_without_markers():
    values = list(np.linspace(2.0, 0.1, MAX_MARKERS + 1))
    root = parse(line_chart([Series("loss", "#c33", indexed(values))], "step", "loss"))
    assert len(coordinates(root.find(f"{SVG}polyline"))) == MAX_MARKERS + 1
    assert root.find(f"{SVG}circle") is None


def test_no_points_give_no_chart_and_bad_points_raise():
    assert line_chart([Series("empty", "#c33", [])], "x", "y") == ""
    with pytest.raises(ValueError, match="'bad'"):
        line_chart([Series("bad", "#c33", [(0, float("nan"))])], "x", "y")
    with pytest.raises(ValueError, match="low"):
        line_chart([Series("band", "#c33", [(0, 0.5, 0.6, 0.4)])], "x", "y")


def test_running_mean_averages_the_trailing_window():
    values = [4.0, 0.0, 2.0, 6.0, 1.0]
    assert running_mean(values, 1) == pytest.approx(values)
    assert running_mean(values, 2) == pytest.approx([4.0, 2.0, 1.0, 4.0, 3.5])
    assert running_mean(values, 10) == pytest.approx([4.0, 2.0, 2.0, 3.0, 2.6])
    with pytest.raises(ValueError, match="window"):
        running_mean(values, 0)


@pytest.mark.parametrize("low, high", [(0.3, 0.9), (0.812, 0.857), (0.0, 99.0), (-0.031, 0.046), (0.5, 0.5)])
def test_nice_ticks_cover_the_range_in_round_steps(low, high):
    ticks = nice_ticks(low, high)
    steps = np.diff(ticks)
    assert ticks[0] <= low and ticks[-1] >= high
    assert np.allclose(steps, steps[0])
    assert any(steps[0] == pytest.approx(m * 10.0**e) for m in (1, 2, 5) for e in range(-4, 4))
    assert 3 <= len(ticks) <= 11
