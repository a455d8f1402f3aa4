"""Flow of the generate stage: each synthetic set's shards mapped as tasks; complete shards are kept."""

import logging
from pathlib import Path

from prefect import flow, unmapped

from flows.cli import run_stage
from flows.runners import shard_runner
from mvcaug.params import load_params
from mvcaug.synthetic_sets import SET_NAMES, synthetic_sets
from tasks.generate import clear_set, generate, plan_set, write_manifest

log = logging.getLogger("mvcaug.generate")


@flow(name="generate")
def generate_shards(root: str, params_file: str) -> dict:
    """Every set this configuration generates (MVC's; the P = Q = 0 one with generate.ablation; the pretrained
    model's with generate.compare_pretrained); a set switched off is emptied, so no stage finds stale images."""
    params = load_params(Path(root) / params_file)
    wanted = {s.name for s in synthetic_sets(params.paths, params.generate)}
    summary = {}
    for name in SET_NAMES:
        if name not in wanted:
            summary[name] = {"removed": clear_set(root, params_file, name), "images": 0}
            continue
        shards, removed = plan_set(root, params_file, name)
        results = generate.map(shards, root=unmapped(root), params_file=unmapped(params_file),
                               set_name=unmapped(name)).result()
        made = sum(generated for _, generated in results)
        images = write_manifest(root, params_file, name, [row for rows, _ in results for row in rows])
        summary[name] = {"shards": len(shards), "generated": made, "kept": len(shards) - made,
                         "removed": len(removed), "images": images}
        log.info("generate %s: %s", name, summary[name])
    return summary


def generate_flow(params_file: str = "params.yaml") -> dict:
    """Run generate_shards with the task runner that params.yaml asks for."""
    g = load_params(params_file).generate
    runner = shard_runner(g.task_runner, g.dask_address, g.dask_workers)
    return generate_shards.with_options(task_runner=runner)(str(Path.cwd()), params_file)


if __name__ == "__main__":
    run_stage(generate_flow)
