from kfp import dsl
from kfp.dsl import Dataset, Output

from signpose.images import PREPROCESS_IMAGE


@dsl.component(base_image=PREPROCESS_IMAGE, install_kfp_package=False)
def preprocess(
    input_uri: str,
    store_uri: str,
    image_size: int,
    shard_size: int,
    synthetic_videos: int,
    synthetic_frames_per_video: int,
    dataset: Output[Dataset],
) -> str:
    """Read + validate keypoints, render skeletons, write shards and the manifest; returns its hash."""
    from signpose import stages

    manifest = stages.preprocess(
        input_uri=input_uri,
        store_uri=store_uri or dataset.path,
        image_size=image_size,
        shard_size=shard_size,
        synthetic_videos=synthetic_videos,
        synthetic_frames_per_video=synthetic_frames_per_video,
    )
    stages.describe_dataset_artifact(manifest, dataset)
    return manifest.dataset_hash
