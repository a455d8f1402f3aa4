"""Run the pipeline with a profile: the profile, checked, becomes params.yaml.

A profile (`profiles/sd15.yaml`) is a whole params file: every key the run needs is in it. DVC reads
params.yaml, so choosing a profile means writing it there; this module does that in one command
(`make run-profile PROFILE=profiles/sd15.yaml` runs it, then `dvc repro`):

    python -m flows.profile profiles/sd15.yaml [--params params.yaml]

Before anything is written, the profile is validated (load_params) and the local files it names are
checked: model folders (`caption.model`, `embed.encoder`, `finetune.pretrained`: a hub id is left to the
hub client) and the classifiers' pretrained weights, so a run never starts without them; each problem is
one line naming the key. The profile is then copied over params.yaml as it is (comments included, atomic),
and the previous params.yaml is kept in `<paths.run>/params-before-profile.yaml` (it is also in git:
`git checkout params.yaml` restores the committed one).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mvcaug.io.atomic import write_text
from mvcaug.core.errors import UserError
from mvcaug.io.model_sources import resolve_source
from mvcaug.core.params import Params
from mvcaug.io.params_file import load_params

__all__ = ["BACKUP", "apply_profile"]

log = logging.getLogger(__name__)

BACKUP = "params-before-profile.yaml"
"""The previous params.yaml, in the profile's paths.run folder (not a DVC output, ignored by git)."""


def check_local_inputs(params: Params) -> None:
    """The files a run with these params reads from outside the pipeline exist: model folders given as
    local paths, and each classifier's pretrained weights. One line naming the key when one does not."""
    from mvcaug.io.classifiers import check_pretrained_files  # torch and timm: only when a profile is applied
    from mvcaug.method.embed import PACKAGED_ENCODER

    if params.caption.backend == "blip2":
        resolve_source(params.caption.model, "caption.model", "a local BLIP-2 folder or a hub id")
    if params.embed.encoder != PACKAGED_ENCODER:
        resolve_source(params.embed.encoder, "embed.encoder", "a local text encoder folder or a hub id")
    if params.finetune.init == "pretrained" or params.generate.mode == "pretrained":
        resolve_source(params.finetune.pretrained, "finetune.pretrained", "a local Stable Diffusion folder or a hub id")
    check_pretrained_files(params.train.models, params.train.model_settings)


def apply_profile(profile: str | Path, params_file: str | Path = "params.yaml") -> Params:
    """Check `profile`, keep the current `params_file` aside, and write the profile over it; the params."""
    profile, params_file = Path(profile), Path(params_file)
    params = load_params(profile)
    check_local_inputs(params)
    text = profile.read_text()
    if params_file.is_file() and params_file.read_text() != text:
        backup = params_file.parent / params.paths.run / BACKUP
        backup.parent.mkdir(parents=True, exist_ok=True)
        write_text(backup, params_file.read_text())
        log.info("the previous %s is kept in %s (and in git: git checkout %s)", params_file, backup, params_file)
    write_text(params_file, text)
    log.info("%s is now %s: run `dvc repro` (make run-profile does both)", params_file, profile)
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check a profile and write it as params.yaml.")
    parser.add_argument("profile", help="a profile, e.g. profiles/sd15.yaml")
    parser.add_argument("--params", default="params.yaml", help="the params file DVC reads (default params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        apply_profile(args.profile, args.params)
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
