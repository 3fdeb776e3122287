"""Preprocessing as a fan-out: plan (validate the input, fix the shards) -> write shard ranges in
parallel tasks -> commit the manifest. Each task re-reads the input itself: nothing large crosses
KFP's parameter passing.

The writer and commit tasks take work items that carry the data set's content hash, so KFP's cache
(keyed by component + inputs) is keyed by the input's content: the same data is never rendered twice, and new
data under the same input URI is never served from a stale cache entry. The plan task itself is not
cached, because it is what looks at the input."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Output

from signpose.deploy.images import PREPROCESS_IMAGE


@dsl.component(base_image=PREPROCESS_IMAGE, install_kfp_package=False)
def plan_dataset(
    input_uri: str,
    store_uri: str,
    image_size: int,
    shard_size: int,
    synthetic_videos: int,
    synthetic_frames_per_video: int,
    render_tasks: int,
    replace_dataset: bool = True,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> List[dict]:
    """Read + validate the keypoints and store the shard plan; bad input fails here, before any
    compute, and so does a store holding another data set unless ``replace_dataset``. Returns the
    writers' work items: {"dataset_hash", "start", "stop", "replaces"}."""
    from signpose import stages

    return stages.plan_preprocess(
        input_uri=input_uri, store_uri=store_uri, image_size=image_size, shard_size=shard_size,
        synthetic_videos=synthetic_videos, synthetic_frames_per_video=synthetic_frames_per_video,
        render_tasks=render_tasks, replace=replace_dataset, dev_fraction=dev_fraction, test_fraction=test_fraction,
    )


@dsl.component(base_image=PREPROCESS_IMAGE, install_kfp_package=False)
def write_shards(
    input_uri: str,
    store_uri: str,
    work_item: dict,
    image_size: int,
    shard_size: int,
    synthetic_videos: int,
    synthetic_frames_per_video: int,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> int:
    """Render the frames of one work item's shards and write them; returns the number of frames."""
    from signpose import stages

    return stages.write_shards(
        input_uri=input_uri, store_uri=store_uri, work_item=work_item, image_size=image_size,
        shard_size=shard_size, synthetic_videos=synthetic_videos,
        synthetic_frames_per_video=synthetic_frames_per_video, dev_fraction=dev_fraction,
        test_fraction=test_fraction,
    )


@dsl.component(base_image=PREPROCESS_IMAGE, install_kfp_package=False)
def commit_dataset(store_uri: str, work_items: list, dataset: Output[Dataset], replace_dataset: bool = True) -> str:
    """Write manifest.json (the commit point: refused if another run committed since the plan) and
    describe the data set on the Dataset artifact."""
    from signpose import stages

    manifest = stages.commit_dataset(store_uri=store_uri, work_items=work_items, replace=replace_dataset)
    stages.describe_dataset_artifact(manifest, dataset)
    return manifest.uri
