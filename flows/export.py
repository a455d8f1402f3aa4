"""Export the synthetic set as a Hugging Face ImageFolder: `python -m flows.export OUT [--with-real]
[--include-dropped] [--force] [--params params.yaml]` (or `make export OUT=folder`).

OUT/<class>/*.png plus OUT/metadata.jsonl (file_name, label, source, caption, mixed_id, seed, cond_id,
kept, reason), readable by `datasets.load_dataset("imagefolder", data_dir=OUT)` and by torchvision's
`ImageFolder(OUT)`. Not a DVC stage: you choose OUT.
"""

from __future__ import annotations

import argparse
import logging

from prefect import flow

from flows.api_server import prefect_api
from flows.cli import user_errors_as_one_line
from mvcaug.io.params_file import load_params
from tasks.export import plan_export, write_export

__all__ = ["export_flow"]

log = logging.getLogger("mvcaug.data.export")


@flow(name="export")
def export_flow(out: str, with_real: bool = False, include_dropped: bool = False, force: bool = False,
                params_file: str = "params.yaml") -> dict[str, int]:
    """Write the kept synthetic images (and optionally the real training split) to `out`."""
    files = plan_export(load_params(params_file), with_real, include_dropped)
    counts = write_export(files, out, force)
    log.info("exported %d images to %s: %s", sum(counts.values()), out, counts)
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the folder to write (refused when it exists and is not empty, unless --force)")
    parser.add_argument("--with-real", action="store_true", help="also export the real training images")
    parser.add_argument("--include-dropped", action="store_true", help="also the images the filter dropped (kept=false)")
    parser.add_argument("--force", action="store_true", help="replace OUT when it exists")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    with user_errors_as_one_line(), prefect_api():
        export_flow(args.out, args.with_real, args.include_dropped, args.force, args.params)
