"""Choose the knobs that decide the synthetic set's diversity on the validation split, then score the
chosen setting on the test split once.

    .venv/bin/python sweeps/diversity.py [--keep DIR] [--only NAME ...]

With --keep, a second call on the same folder resumes the sweep: earlier experiments stay in the ranking
and only the named settings (or all) that have no experiment there yet run.

It copies the project into a throw-away git + DVC workspace (the params as committed), runs one
`dvc exp run` per setting (one at a time, each from the committed params, so persisted shards and cells
carry over when their inputs match), reads the results with `dvc exp show --json`, ranks the settings by
the mean validation accuracy of the combined cells (`small_cnn.syn.val_acc_mean`, 5 seeds) and prints
one table: every setting's validation accuracy, its difference from the top setting with a 95% Welch
interval (mvcaug.judging.stats.rank_with_ties), and the test accuracy and paired gain of the chosen one only. Test
figures of the other settings are never printed, so nothing is picked by its test score. A tie is called a
tie: when the defaults cannot be told from the top setting on validation, the defaults stay chosen (no
change without evidence), except for the amount of training (WORK_KNOBS: pretraining and fine-tuning steps): among
the tied settings that change nothing else, the least work (training samples) is chosen, so a run costs no more
than validation can justify.

While sweeping, the train stage trains only what the ranking needs (real and combined cells, the full
synthetic set, no ablation); the chosen setting then becomes the default in params.yaml and the full
pipeline reports it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvcaug.io.params_file import load_params  # noqa: E402
from mvcaug.judging.stats import rank_with_ties  # noqa: E402
from tests.workspace import ROOT, make_workspace, run  # noqa: E402

log = logging.getLogger("sweeps.diversity")

SWEEP_ONLY = ["train.strategies=[real,combined]", "train.synthetic_budgets=[1.0]", "generate.ablation=false",
              "generate.compare_pretrained=false"]
"""What the ranking needs of the train stage: real and combined cells on the full synthetic set."""

SETTINGS: dict[str, list[str]] = {
    "defaults": [],
    "scratch initialisation": ["finetune.init=scratch"],
    "text condition fresh": ["finetune.text_condition=fresh"],
    "fine-tuning steps 100": ["finetune.steps=100"],
    "fine-tuning steps 200": ["finetune.steps=200"],
    "fine-tuning steps 400": ["finetune.steps=400"],
    "pretraining steps 1050": ["pretrain.steps=1050"],
    "pretraining steps 700": ["pretrain.steps=700"],
    "guidance 1.5": ["generate.guidance_scale=1.5"],
    "guidance 3": ["generate.guidance_scale=3.0"],
    "image dropout 0.2": ["finetune.image_dropout=0.2"],
}
"""The grid: one knob at a time against the defaults: where the generator starts from (the pretrain stage's
model or a U-Net from scratch), what its text says during fine-tuning (the target's own caption with MVC's
edits, or a fresh mix of the class), how long it pretrains and fine-tunes, how hard generation follows the text
and how often fine-tuning hides the conditioning image. "pretraining steps 1050" is where the defaults' own
self-check curve already passes (0.93 at step 1,050 of 1,400, README), with the cosine schedule ending there;
"pretraining steps 700" is where it was just below (0.88), so it is a candidate only if its own shorter schedule
passes (failed_self_check). The pretrain stage runs once for all the other settings: every experiment reuses its
output from DVC's run cache, and the workspace shares this checkout's DVC cache (`dvc cache dir --local`), so a
pretrained model this checkout already made is restored, not trained again."""


WORK_KNOBS = {"pretrain.steps": "pretrain.batch_size", "finetune.steps": "finetune.batch_size"}
"""The knobs that only set how much work the generator does, not what it learns from (each with the batch size that
turns its steps into training samples): among the settings tied with the top on validation, the defaults and the
settings that change only these knobs are chosen by the least work (the fewest training samples, pretraining and
fine-tuning together), so a run takes no longer than validation can justify; every other knob keeps the rule of no
change without evidence (the defaults stay when they are tied with the top)."""


def default_work(workspace: Path) -> dict[str, int]:
    """The values of the work knobs and their batch sizes in the params.yaml the workspace committed (the sweep's
    defaults, not this checkout's params.yaml, which may have moved on since the workspace was made)."""
    run(["git", "checkout", "--", "params.yaml"], workspace)  # the last experiment's overrides are still in it
    params = load_params(workspace / "params.yaml")
    values = {}
    for name in (name for steps_and_batch in WORK_KNOBS.items() for name in steps_and_batch):
        section, key = name.split(".")
        values[name] = int(getattr(getattr(params, section), key))
    return values


def work(name: str, defaults: dict[str, int]) -> int | None:
    """The training samples (pretraining plus fine-tuning) of a setting that changes nothing but WORK_KNOBS (the
    defaults' values: `defaults`, as default_work gives them), else None."""
    overrides = dict(override.split("=", 1) for override in SETTINGS[name])
    if set(overrides) - set(WORK_KNOBS):
        return None
    values = {**defaults, **{knob: int(value) for knob, value in overrides.items()}}
    return sum(values[steps] * values[batch] for steps, batch in WORK_KNOBS.items())


def choose(ranking: list, defaults: dict[str, int]) -> str:
    """The chosen setting: the least work among the tied defaults-like settings (`work`), else the top."""
    candidates = [(samples, entry.name) for entry in ranking if entry.tied
                  for samples in [work(entry.name, defaults)] if samples is not None]
    return min(candidates)[1] if candidates else ranking[0].name


def failed_self_check(workspace: Path) -> str | None:
    """Why the experiment just run in the workspace is no candidate: its pretrained model failed the pretrain stage's
    own self-check (metrics.json in paths.pretrain; a generator that does not draw what its text asks for is not a
    cheaper equal, whatever validation says); None when it passed or has none (pretrain.source other than glyphs)."""
    pretrained = workspace / load_params(workspace / "params.yaml").paths.pretrain
    check = json.loads((pretrained / "metrics.json").read_text()).get("self_check")
    if not check or check["passed"]:
        return None
    return f"the pretrained model failed its self-check (ratio {check['ratio']:.2f} < {check['ratio_needed']})"


def experiment_metrics(workspace: Path) -> dict[str, dict]:
    """{experiment name: metrics.json's small_cnn section} of every experiment in the workspace."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], workspace).stdout)
    found = {}
    for row in shown:
        for experiment in row.get("experiments") or []:
            revision = experiment["revs"][0]
            metrics = (revision.get("data") or {}).get("metrics", {}).get("metrics.json", {}).get("data", {})
            if revision.get("name") and "small_cnn" in metrics:
                found[revision["name"]] = metrics["small_cnn"]
    return found


def settings_to_run(asked: list[str], experiments: Iterable[str]) -> list[str]:
    """The asked settings that have no experiment in a resumed workspace yet (`experiments`: their slugs): a finished
    one keeps its result, since DVC refuses to run an experiment name twice (and -f would rerun every stage)."""
    finished = set(experiments)
    return [name for name in asked if slug(name) not in finished]


def slug(name: str) -> str:
    return name.replace(" ", "-").replace(".", "")


def _seconds(seconds: dict[str, float], name: str) -> str:
    return f"{seconds[name]:.0f}" if name in seconds else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="workspace folder to keep (default: a temporary one)")
    parser.add_argument("--only", nargs="*", choices=sorted(SETTINGS), help="run these settings only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mvcaug-sweep-"))
    folder.mkdir(parents=True, exist_ok=True)
    # A kept workspace is resumed: its experiments stay and join the ranking, only the named settings run.
    workspace = folder if (folder / ".git").is_dir() else make_workspace(folder, params={})
    run(["dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], workspace)
    record = workspace.with_name(workspace.name + ".sweep.json")  # times and failures so far, beside it
    done = json.loads(record.read_text()) if record.is_file() else {"seconds": {}, "failed": {}}
    seconds, failed = done["seconds"], done["failed"]
    asked = args.only or list(SETTINGS)
    to_run = settings_to_run(asked, experiment_metrics(workspace))
    for name in (name for name in asked if name not in to_run):
        log.info("%s: kept from the workspace", name)
    for name in to_run:
        run(["git", "checkout", "--", "params.yaml"], workspace)  # every setting starts from the defaults
        overrides = [arg for value in SWEEP_ONLY + SETTINGS[name] for arg in ("-S", value)]
        start = time.perf_counter()
        result = run(["dvc", "exp", "run", "-n", slug(name), *overrides], workspace, check=False)
        seconds[name] = time.perf_counter() - start
        failed.pop(name, None)
        if result.returncode != 0:  # e.g. the filter kept no image: the setting gives no synthetic set to train on
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            failed[name] = errors[-1] if errors else result.stderr.strip().splitlines()[-1]
        elif (refusal := failed_self_check(workspace)) is not None:
            failed[name] = refusal
        record.write_text(json.dumps({"seconds": seconds, "failed": failed}))
        log.info("%s: %.0f s%s", name, seconds[name], f" ({failed[name]})" if name in failed else "")
    metrics = experiment_metrics(workspace)
    names = [n for n in SETTINGS if n not in failed and slug(n) in metrics]
    ranking = rank_with_ties({n: (metrics[slug(n)]["syn"]["val_acc_mean"], metrics[slug(n)]["syn"].get("val_acc_std", 0.0),
                                  metrics[slug(n)]["syn"]["runs"]) for n in names})
    tied = [r.name for r in ranking if r.tied]
    chosen = choose(ranking, default_work(workspace))
    log.info("workspace: %s", workspace)
    log.info("| setting | overrides | val acc, combined (%) | vs the top (pp) [95% CI] | val acc, real only (%) | "
             "test acc, combined (%) | test gain, paired (pp) | time (s) |")
    log.info("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for entry in ranking:
        name = entry.name
        syn, real = metrics[slug(name)]["syn"], metrics[slug(name)]["baseline"]
        test = f"{100 * syn['acc_mean']:.2f}" if name == chosen else "not scored"
        gain = (f"{100 * syn['gain']:+.2f} [{100 * syn['gain_ci_low']:+.2f}, {100 * syn['gain_ci_high']:+.2f}]"
                if name == chosen and "gain_ci_low" in syn else "not scored")
        versus = ("top" if entry is ranking[0] else
                  f"{100 * entry.difference:+.2f} [{100 * entry.ci_low:+.2f}, {100 * entry.ci_high:+.2f}]"
                  + (" tie" if entry.tied else ""))
        log.info("| %s | %s | %.2f | %s | %.2f | %s | %s | %s |", name, ", ".join(SETTINGS[name]) or "(params.yaml)",
                 100 * syn["val_acc_mean"], versus, 100 * real["val_acc_mean"], test, gain, _seconds(seconds, name))
    for name, error in failed.items():
        log.info("| %s | %s | no result: %s | | | | %s |", name, ", ".join(SETTINGS[name]), error,
                 _seconds(seconds, name))
    if len(tied) > 1:
        log.info("tied with the top on validation (95%% Welch intervals of the difference hold 0): %s", ", ".join(tied))
    why = ("" if chosen == ranking[0].name else
           " (tied with the top: the defaults stay)" if chosen == "defaults" else
           " (tied with the top: the least training of the settings that change nothing else)")
    log.info("chosen on validation: %s%s", chosen, why)


if __name__ == "__main__":
    main()
