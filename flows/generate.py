"""Flow of the generate stage: shards mapped as tasks; complete shards are kept, not redone."""

import logging
from pathlib import Path

from prefect import flow, unmapped

from flows.cli import run_stage
from flows.runners import shard_runner
from mvcaug.atomic import write_parquet
from mvcaug.generate import plan_shards, remove_stale_shards, synthetic_manifest
from mvcaug.params import load_params
from tasks.generate import generate, load_inputs, output_dir

log = logging.getLogger("mvcaug.generate")


def generate_set(root: str, params_file: str, ablation: bool) -> dict:
    """Generate every shard of one set (MVC, or the P = Q = 0 ablation), then write its manifest.parquet."""
    params = load_params(Path(root) / params_file)
    out_dir = output_dir(root, params_file, ablation)
    labels = sorted(load_inputs(root, params_file, ablation).mixed_ids)
    shards = plan_shards(labels, params.generate)
    removed = remove_stale_shards(out_dir, shards)
    shard_task = generate.with_options(task_run_name="ablation-{shard.name}") if ablation else generate
    results = shard_task.map(shards, root=unmapped(root), params_file=unmapped(params_file),
                             ablation=unmapped(ablation)).result()
    rows = [row for shard_rows, _ in results for row in shard_rows]
    made = sum(generated for _, generated in results)
    write_parquet(out_dir / "manifest.parquet", synthetic_manifest(rows))
    return {"shards": len(shards), "generated": made, "kept": len(shards) - made,
            "removed": len(removed), "images": len(rows)}


@flow(name="generate")
def generate_shards(root: str, params_file: str) -> dict:
    """The synthetic set; with generate.ablation, the same shards from the P = Q = 0 mixes as well
    (else that set is emptied, so the train stage finds no stale ablation images)."""
    summary = generate_set(root, params_file, ablation=False)
    log.info("generate: %s", summary)
    if load_params(Path(root) / params_file).generate.ablation:
        ablation = generate_set(root, params_file, ablation=True)
    else:
        out_dir = output_dir(root, params_file, ablation=True)
        ablation = {"removed": len(remove_stale_shards(out_dir, [])), "images": 0}
        write_parquet(out_dir / "manifest.parquet", synthetic_manifest([]))
    log.info("generate, MVC ablation (P = Q = 0): %s", ablation)
    return {**summary, "ablation": ablation}


def generate_flow(params_file: str = "params.yaml") -> dict:
    """Run generate_shards with the task runner that params.yaml asks for."""
    params = load_params(params_file)
    g = params.generate
    runner = shard_runner(g.task_runner, g.dask_address, g.dask_workers)
    return generate_shards.with_options(task_runner=runner)(str(Path.cwd()), params_file)


if __name__ == "__main__":
    run_stage(generate_flow)
