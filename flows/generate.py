"""Flow of the generate stage: the shards of every set grouped into work units mapped as tasks; complete
shards are kept."""

import logging
from pathlib import Path

from prefect import flow

from flows.cli import run_stage
from flows.runners import map_shards, shard_runner
from mvcaug.io.params_file import load_params
from mvcaug.data.synthetic_sets import SET_NAMES, synthetic_sets
from tasks.generate import clear_set, generate, plan_set, plan_tasks, remove_stale, write_manifest

__all__ = ["generate_flow", "run_generate_flow"]

log = logging.getLogger("mvcaug.method.generate")


@flow(name="generate")
def generate_flow(root: str, params_file: str) -> dict:
    """Every set this configuration generates (MVC's; the unmixed one, P = Q = 0, with generate.ablation; the pretrained
    model's with generate.compare_pretrained); a set switched off is emptied, so no stage finds stale images.
    A task holds whole shards of every set one model makes, so the MVC and unmixed sets share batches."""
    params = load_params(Path(root) / params_file)
    wanted = {s.name for s in synthetic_sets(params.paths, params.generate)}
    summary, plans = {}, {}
    for name in SET_NAMES:
        if name in wanted:
            plans[name] = plan_set(root, params_file, name)
        else:
            summary[name] = {"removed": clear_set(root, params_file, name), "images": 0}
    work = plan_tasks(root, params_file, plans)
    results = map_shards(generate, params.generate.task_runner, work, root=root, params_file=params_file)
    done = [entry for unit in results for entry in unit]
    for name, shards in plans.items():
        mine = [(rows, generated) for set_name, rows, generated in done if set_name == name]
        made = sum(generated for _, generated in mine)
        images = write_manifest(root, params_file, name, [row for rows, _ in mine for row in rows])
        removed = remove_stale(root, params_file, name, shards)  # only once the new manifest names none of them
        summary[name] = {"shards": len(shards), "generated": made, "kept": len(shards) - made,
                         "removed": len(removed), "images": images}
        log.info("generate %s: %s", name, summary[name])
    log.info("generate: %d shards in %d tasks", sum(len(s) for s in plans.values()), len(work))
    return summary


def run_generate_flow(params_file: str = "params.yaml") -> dict:
    """Run generate_flow with the task runner that params.yaml asks for."""
    g = load_params(params_file).generate
    runner = shard_runner(g.task_runner, g.dask_address, g.dask_workers)
    return generate_flow.with_options(task_runner=runner)(str(Path.cwd()), params_file)


if __name__ == "__main__":
    run_stage(run_generate_flow)
