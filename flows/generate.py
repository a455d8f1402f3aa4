"""Flow of the generate stage: shards mapped as tasks; complete shards are kept, not redone."""

import logging
from pathlib import Path

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from flows.cli import run_stage
from mvcaug.atomic import write_parquet
from mvcaug.generate import plan_shards, remove_stale_shards, synthetic_manifest
from mvcaug.params import GenerateParams, load_params
from tasks.generate import generate, load_inputs

log = logging.getLogger("mvcaug.generate")


def task_runner(params: GenerateParams):
    """Shards one at a time in this process, or on Dask (an existing cluster, or a LocalCluster)."""
    if params.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if params.dask_address:
            return DaskTaskRunner(address=params.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": params.dask_workers, "threads_per_worker": 1})
    return ThreadPoolTaskRunner(max_workers=1)


@flow(name="generate")
def generate_shards(root: str, params_file: str) -> dict:
    """Generate every shard, then write synthetic/manifest.parquet."""
    params = load_params(Path(root) / params_file)
    out_dir = Path(root) / params.paths.synthetic
    labels = sorted(load_inputs(root, params_file).mixed_ids)
    shards = plan_shards(labels, params.generate)
    removed = remove_stale_shards(out_dir, shards)
    results = generate.map(shards, root=unmapped(root), params_file=unmapped(params_file)).result()
    rows = [row for shard_rows, _ in results for row in shard_rows]
    made = sum(generated for _, generated in results)
    write_parquet(out_dir / "manifest.parquet", synthetic_manifest(rows))
    summary = {"shards": len(shards), "generated": made, "kept": len(shards) - made,
               "removed": len(removed), "images": len(rows)}
    log.info("generate: %s", summary)
    return summary


def generate_flow(params_file: str = "params.yaml") -> dict:
    """Run generate_shards with the task runner that params.yaml asks for."""
    params = load_params(params_file)
    runner = task_runner(params.generate)
    return generate_shards.with_options(task_runner=runner)(str(Path.cwd()), params_file)


if __name__ == "__main__":
    run_stage(generate_flow)
