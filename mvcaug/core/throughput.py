"""What a stage got done per second, and on which device: the figures a user sizes a larger run with.

A stage's tasks each add a Throughput (a count of work units, the seconds that work took, the device it ran
on); the ones of the same kind of work on the same kind of device add up, so a grid of cells or a set of
shards on several workers reads as one rate per device: units / busy seconds, what one device does. The
report shows it beside each stage's wall time (e.g. "7.9 training samples/s on cpu"), and an estimate of a
larger run is units wanted / rate / devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

__all__ = ["Throughput", "combined", "describe", "stage_throughput"]


@dataclass(frozen=True)
class Throughput:
    """`count` units of `what` (plural, e.g. "images") done in `seconds` on `device` (mvcaug.core.devices.device_label's text)."""

    what: str
    count: int
    seconds: float
    device: str

    @property
    def rate(self) -> float:
        """Units per second (0.0 for no time measured)."""
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: Mapping) -> "Throughput":
        return cls(str(record["what"]), int(record["count"]), float(record["seconds"]), str(record["device"]))


def stage_throughput(entry: Mapping) -> list[Throughput]:
    """The measures recorded in a stage's entry of the stage-times file (under "throughput"); none for an
    entry without them. The one reader of that record, for the report and the benchmarks alike."""
    return [Throughput.from_json(record) for record in entry.get("throughput", [])]


def combined(measures: Iterable[Throughput]) -> list[Throughput]:
    """The measures of the same work on the same device summed (counts and busy seconds), in first-seen order."""
    totals: dict[tuple[str, str], Throughput] = {}
    for m in measures:
        key = (m.what, m.device)
        seen = totals.get(key)
        totals[key] = m if seen is None else Throughput(m.what, seen.count + m.count, seen.seconds + m.seconds,
                                                        m.device)
    return list(totals.values())


def describe(measures: Iterable[Throughput]) -> str:
    """One line for the report: "25.3 training samples/s on cpu (25,600 in 1,012 s)", several joined by "; ".
    A rate under one per second reads per minute, so a grid of cells shows "4.2 classifier cells/min"."""
    parts = []
    for m in combined(measures):
        rate, unit = (m.rate, "s") if m.rate >= 1 or m.rate == 0 else (60 * m.rate, "min")
        parts.append(f"{rate:.3g} {m.what}/{unit} on {m.device} ({m.count:,} in {m.seconds:,.0f} s)")
    return "; ".join(parts)
