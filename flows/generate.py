"""Flow of the generate stage: shards mapped as tasks; complete shards are kept, not redone."""

import logging

from prefect import flow

from flows.cli import run_stage
from mvcaug.atomic import write_parquet
from mvcaug.generate import plan_shards, remove_stale_shards, synthetic_manifest
from mvcaug.params import load_params
from tasks.generate import load_inputs, shard

log = logging.getLogger("mvcaug.generate")


@flow(name="generate")
def generate_flow(params_file: str = "params.yaml") -> dict:
    """Generate every shard, then write synthetic/manifest.parquet."""
    params = load_params(params_file)
    out_dir = params.paths.synthetic
    inputs = load_inputs(params)
    shards = plan_shards(list(inputs.mixed_ids), params.generate)
    removed = remove_stale_shards(out_dir, shards)
    rows, made = [], 0
    for item in shards:
        shard_rows, generated = shard(item, inputs, out_dir)
        rows += shard_rows
        made += generated
    write_parquet(f"{out_dir}/manifest.parquet", synthetic_manifest(rows))
    summary = {"shards": len(shards), "generated": made, "kept": len(shards) - made,
               "removed": len(removed), "images": len(rows)}
    log.info("generate: %s", summary)
    return summary


if __name__ == "__main__":
    run_stage(generate_flow)
