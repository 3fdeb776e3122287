"""Real signers scored next to the generated validation data (``--real_eval_path``).

The evaluation set is keypoint files of real people in any format :func:`signpose.io.read_keypoints`
reads: one file, a local folder of them, or an object-store prefix (``s3://bucket/real/``) whose
objects are downloaded first. Every usable frame is scored every epoch under the ``val_real/``
prefix (``val_real/nme`` for the face task; ``val_real/ssim``, ``val_real/psnr``,
``val_real/mse_hands|face|body`` for the skeleton task, against targets rendered from the real
keypoints), and the training run gets a real-signer panel.
"""

from __future__ import annotations

import logging
import os
import tempfile

from torch.utils.data import Dataset

from signpose.errors import UserError
from signpose.tasks import get_task

log = logging.getLogger(__name__)

REAL_EVAL_NAME = "val_real"


def _read_frames(path: str):
    from signpose.io import read_keypoints

    if "://" not in path or path.startswith("file://"):
        return read_keypoints(path.removeprefix("file://"))
    from signpose.store import open_store

    store = open_store(path)
    keys = [key for key in store.list() if not key.endswith("/")]
    if not keys:
        raise UserError(f"{path}: no real evaluation files under this prefix")
    with tempfile.TemporaryDirectory(prefix="signpose-real-eval-") as folder:
        for key in keys:
            local = os.path.join(folder, key.replace("/", "__"))
            with open(local, "wb") as fh:
                fh.write(store.get_bytes(key))
        return read_keypoints(folder)


def load_real_eval(task: str, path: str, image_size: int = 0) -> Dataset | None:
    """The real evaluation set of ``task`` at ``path`` ('' = none): every usable frame of every file."""
    if not path:
        return None
    samples = get_task(task).samples
    frames = _read_frames(path)
    usable = samples.usable_frames(frames.keypoints)
    if not usable.any():
        raise UserError(f"{path}: no frame of the real evaluation set is usable for the {task} task, which "
                        f"needs {samples.needs}")
    log.info("real evaluation set %s: %d of %d frames usable for %s", path, int(usable.sum()), len(usable), task)
    return samples.from_frames(frames.keypoints[usable], image_size)
