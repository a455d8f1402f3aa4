"""What `dvc plots show` / `dvc plots diff` draw of the train stage, gathered from the cells' dvclive logs.

A DVC plot definition names a fixed file or folder (no globs), and every file in a declared folder
becomes a plot with that definition's properties. The cell folders cannot be declared themselves:
their names come from the grid, and besides dvclive's curves (TSV, x = step) each holds result.json,
dvclive's summary metrics.json and the test confusion matrix, which needs the confusion template. So
after the grid the train stage rebuilds two folders that dvc.yaml declares, one per kind of plot:

- curves/<cell>/<metric>.tsv: copies of the cell's dvclive curves (train_loss, val_acc, lr per epoch);
- confusion/<column>.json: the test predictions ({actual, predicted} rows) of every seed of a grid
  column (the cell name without its seed); the template counts the pairs, so seeds add up.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from mvcaug.io.atomic import replacing_folder, write_json
from mvcaug.judging.cells import Cell
from mvcaug.io.catalog import FILES

__all__ = ["DVCLIVE_CURVES", "DVCLIVE_CONFUSION", "write_train_plots"]

log = logging.getLogger(__name__)

# The train stage's plots folder (paths.train / FILES.plots) holds FILES.curves and FILES.confusion; what it
# reads from a cell's dvclive log lies where dvclive puts it:
DVCLIVE_PLOTS = Path("plots")  # catalog-exempt: dvclive's own folder in a cell (Live.plots_dir), not ours to name
DVCLIVE_CURVES = DVCLIVE_PLOTS / "metrics"
DVCLIVE_CONFUSION = DVCLIVE_PLOTS / "sklearn" / FILES.confusion_matrix


def grid_column(cell: Cell) -> str:
    """The cell's name without its seed: the unit whose seeds share one confusion matrix."""
    return cell.name.removesuffix(f"-seed{cell.seed}")


def write_train_plots(cells: Sequence[Cell], cells_dir: str | Path, plots_dir: str | Path) -> dict[str, int]:
    """Rebuild plots_dir (curves/ and confusion/) from the dvclive logs of `cells` under cells_dir.

    A cell without a log (trained before it was written) is skipped with a warning. Returns the
    number of curve files and of confusion matrices written."""
    # Built beside and swapped in: a cell dropped from the grid leaves no plot behind, and a failure midway
    # leaves the last complete plots, not a half-emptied folder.
    with replacing_folder(plots_dir) as building:
        return _build_train_plots(cells, Path(cells_dir), building)


def _build_train_plots(cells: Sequence[Cell], cells_dir: Path, plots_dir: Path) -> dict[str, int]:
    """write_train_plots' work, into the empty folder plots_dir."""
    # 1. Curves, one folder per cell.
    curves = 0
    for cell in cells:
        for tsv in sorted((cells_dir / cell.name / DVCLIVE_CURVES).glob("*.tsv")):
            target = plots_dir / FILES.curves / cell.name / tsv.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tsv, target)
            curves += 1
    # 2. Confusion matrices, the seeds of a column pooled in grid order.
    pooled: dict[str, list[dict]] = {}
    for cell in cells:
        source = cells_dir / cell.name / DVCLIVE_CONFUSION
        if source.is_file():
            pooled.setdefault(grid_column(cell), []).extend(json.loads(source.read_text()))
        else:
            log.warning("%s: no %s; its test predictions are left out of the confusion plots", cell.name, source)
    for column, rows in pooled.items():
        write_json(plots_dir / FILES.confusion / f"{column}.json", rows)
    return {"curves": curves, "confusion": len(pooled)}
