"""Add new images to the dataset and announce them: `python -m flows.ingest <folder>`.

<folder> holds class subfolders (<folder>/<class>/*.png). Images whose content is already in
`prepare.image_folder` are skipped; the others are copied into <image_folder>/<class>/ atomically.
When any arrived, the Prefect event `mvcaug.data.arrived` (resource `mvcaug.dataset.<image folder
name>`, payload: new_files, per_class) is emitted: it triggers the served `regenerate` deployment.
Prints nothing; the log says what was copied and skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, get_run_logger

from flows.cli import user_errors_as_one_line
from mvcaug.io.params_file import load_params
from tasks.ingest import announce_arrival, ingest_images

__all__ = ["ingest"]


@flow(name="ingest")
def ingest(folder: str, root: str = ".") -> int:
    """Copy the new images of folder/<class>/ into the dataset and emit mvcaug.data.arrived; returns their number."""
    logger = get_run_logger()
    params = load_params(Path(root) / "params.yaml")
    if params.prepare.source != "imagefolder":
        logger.warning("prepare.source is %r: the pipeline reads %s only with prepare.source: imagefolder",
                       params.prepare.source, params.prepare.image_folder)
    dataset = str(Path(root) / params.prepare.image_folder)
    added = ingest_images(folder, dataset)
    if added:
        announce_arrival(dataset, added)
    else:
        logger.info("no new images in %s; no event emitted", folder)
    return sum(added.values())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=ingest.__doc__)
    parser.add_argument("folder", help="a folder of class subfolders with new images")
    parser.add_argument("--root", default=".", help="the DVC project folder (default: .)")
    args = parser.parse_args()
    with user_errors_as_one_line():
        ingest(folder=args.folder, root=args.root)
