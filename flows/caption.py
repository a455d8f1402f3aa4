"""Flow of the caption stage: one prefixed caption per training image.

Bodies are cached by image content hash, captioner configuration and code (paths.cache), so only
images never captioned before reach the model; those are split into shards mapped on the task runner
that caption.task_runner names (this process, one after another, or a Dask cluster).
"""

from prefect import flow

from flows.cli import run_stage
from flows.runners import map_shards, shard_runner
from mvcaug.io.params_file import load_params
from tasks.caption import caption_shard, plan_captions, write_captions

__all__ = ["caption_flow"]


@flow(name="caption")
def caption_flow(params_file: str = "params.yaml") -> dict:
    """Caption the training split, reusing cached bodies; returns counts."""
    params = load_params(params_file)
    plan = plan_captions(params)
    results = map_shards(
        caption_shard, params.caption.task_runner, plan.shards, range(len(plan.shards)), params=params.caption,
        prepare=params.prepare, prepared_dir=plan.prepared_dir, cache_file=plan.cache_file, namespace=plan.namespace,
    ) if plan.shards else []
    return write_captions(plan, results, params)


def run_caption_flow(params_file: str = "params.yaml") -> dict:
    """Run caption_flow on the task runner that params.yaml asks for (caption.task_runner)."""
    c = load_params(params_file).caption
    return caption_flow.with_options(task_runner=shard_runner(c.task_runner, c.dask_address, c.dask_workers))(
        params_file
    )


if __name__ == "__main__":
    run_stage(run_caption_flow)
