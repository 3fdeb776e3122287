"""Datasets for the two training tasks: in-memory (the seed's) and streamed from shards.

- :class:`SkeletonDataset` / :class:`KeypointDataset`: the seed's in-memory datasets, same signatures.
- :func:`normalize_face`: the one rule for putting face landmarks into [0, 1].
- :class:`ShardStream`: a ``torch.utils.data.IterableDataset`` over the shards of a manifest, split
  across DataLoader workers and DDP ranks, shuffled through a bounded buffer, checksum-verified, with
  the next shards prefetched in a background thread; memory stays at a few shards whatever the data size.
- :func:`load_split`: one split of a manifest fully in memory, as a map-style dataset (small data).

Both tasks yield the same tuples from every source:
- ``"skeleton"``: ``(keypoints (143, 3) float32, image (1, S, S) float32 in [0, 1])``
- ``"face"``: ``(face (68, 3) float32 normalised, the same tensor)``; frames without any face
  point are skipped (nothing to reconstruct).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from signpose import layout
from signpose.render import RenderSettings, render_frame
from signpose.shards import Manifest, PackedImages, ShardInfo, read_manifest, read_shard
from signpose.shards.manifest import ManifestInconsistentError, face_present
from signpose.store import ObjectStore, open_store


def normalize_face(face):
    """Per-sample [0, 1] normalisation of face landmarks ``(..., 68, 3)``.

    The bounding box of the present points (confidence > 0) is scaled by its longer side (aspect
    ratio preserved) and centred in the unit square; confidence is kept; missing points stay all
    zero. A sample without present points is returned as zeros. Accepts numpy arrays or tensors.
    """
    if isinstance(face, torch.Tensor):
        return torch.from_numpy(normalize_face(face.detach().cpu().numpy())).to(face.device)
    face = np.asarray(face, dtype=np.float32)
    if face.shape[-2:] != (layout.N_FACE, 3):
        raise ValueError(f"normalize_face: expected shape (..., {layout.N_FACE}, 3), got {face.shape}")
    xy, conf = face[..., :2], face[..., 2]
    present = conf > 0
    big = np.float32(np.inf)
    lo = np.where(present[..., None], xy, big).min(axis=-2)            # (..., 2)
    hi = np.where(present[..., None], xy, -big).max(axis=-2)           # (..., 2)
    any_present = present.any(axis=-1)
    lo = np.where(any_present[..., None], lo, 0.0)
    hi = np.where(any_present[..., None], hi, 0.0)
    extent = (hi - lo).max(axis=-1, keepdims=True)                    # (..., 1): longer side
    # A single point (or a degenerate line) has no extent: put it in the middle instead of dividing by 0.
    scale = np.where(extent > 1e-12, extent, 1.0)
    centre = (lo + hi) / 2
    out_xy = (xy - centre[..., None, :]) / scale[..., None, :] + 0.5
    out = np.concatenate([out_xy, conf[..., None]], axis=-1).astype(np.float32)
    out[~present] = 0.0
    return out


class SkeletonDataset(Dataset):
    """The seed's skeleton dataset: ``(keypoints (143, 3), image (1, S, S) in [0, 1])``.

    ``keypoints_data``: list of per-frame dicts (face/left_hand/right_hand/pose) or an (N, 143, 3)
    array. ``images_data``: (N, S, S) float in [0, 1] or uint8; when None the images are rendered on
    access (the seed rendered all of them up front into float32 RAM: 256 KiB a frame).
    """

    def __init__(self, keypoints_data, images_data=None, image_size: int = 256):
        if isinstance(keypoints_data, np.ndarray | torch.Tensor):
            keypoints = np.asarray(keypoints_data, dtype=np.float32)
        else:
            keypoints = np.stack([layout.flatten_frame(f) for f in keypoints_data]) if len(keypoints_data) \
                else np.zeros((0, layout.N_POINTS, 3), np.float32)
        if keypoints.ndim != 3 or keypoints.shape[1:] != (layout.N_POINTS, 3):
            raise ValueError(f"SkeletonDataset: keypoints must be (N, {layout.N_POINTS}, 3), got {keypoints.shape}")
        self.keypoints = keypoints
        self.image_size = image_size
        self.settings = RenderSettings(image_size=image_size)
        if images_data is not None:
            images = np.asarray(images_data)
            if images.shape != (len(keypoints), image_size, image_size):
                raise ValueError(f"SkeletonDataset: images must be ({len(keypoints)}, {image_size}, "
                                 f"{image_size}), got {images.shape}")
        self.images = None if images_data is None else images

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, index: int):
        kp = self.keypoints[index]
        if self.images is None:
            image = render_frame(kp, self.settings)
        else:
            image = self.images[index]
        return torch.from_numpy(kp.copy()), _image_tensor(image)


class KeypointDataset(Dataset):
    """The seed's face dataset: ``(face (68, 3), face (68, 3))``, normalised by :func:`normalize_face`.

    ``keypoints_data``: (N, 68, 3) face-only array (an (N, 143, 3) array is cut to its face slice).
    """

    def __init__(self, keypoints_data, normalize: bool = True):
        face = np.asarray(keypoints_data, dtype=np.float32)
        if face.ndim == 3 and face.shape[1:] == (layout.N_POINTS, 3):
            face = face[:, layout.FACE]
        if face.ndim != 3 or face.shape[1:] != (layout.N_FACE, 3):
            raise ValueError(f"KeypointDataset: keypoints must be (N, {layout.N_FACE}, 3), got {face.shape}")
        self.keypoints = normalize_face(face) if normalize else np.ascontiguousarray(face)

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, index: int):
        kp = torch.from_numpy(self.keypoints[index].copy())
        return kp, kp


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        tensor = torch.from_numpy(image.astype(np.float32) / 255.0)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return tensor.unsqueeze(0)


class SampleKind:
    """What one training sample is, read from decoded shard columns (the data side of a task).

    A task (:mod:`signpose.tasks`) names its sample kind; this module knows only the kinds. A kind
    says which frames are usable, whether the image streams must be decoded, how a shard's rows are
    prepared at once (vectorised), and how one row becomes a small numpy sample and then tensors.
    """

    name = "base"
    input_shape: tuple[int, ...] = ()  # one sample's model input
    reads_images = False   # decode the shards' image streams (64 KiB a frame at 256 px)
    needs = "keypoint frames"  # what makes a frame usable, for error messages
    counted_by: str | None = None  # the ShardInfo field counting the usable frames per split, if any

    def usable(self, arrays: dict) -> np.ndarray:
        """Boolean mask of the rows of decoded shard columns this kind can use. It sees the columns
        without the images (``read_shard(..., images=False)``: how streams count their samples)."""
        return np.ones(len(arrays["keypoints"]), dtype=bool)

    @property
    def every_frame(self) -> bool:
        """Every frame is a sample (:meth:`usable` is not narrowed): counts come from the manifest."""
        return type(self).usable is SampleKind.usable

    def recorded_count(self, shard: ShardInfo, split: str | None) -> int | None:
        """This kind's samples in ``shard`` (of ``split``; all splits for None) as the manifest records
        them (``ShardInfo.<counted_by>``), or None when it does not: then the shard's columns are read."""
        name = "splits" if self.every_frame else self.counted_by
        counts = getattr(shard, name) if name else None
        if counts is None:
            return None
        return sum(counts.values()) if split is None else counts.get(split, 0)

    def prepare(self, arrays: dict, rows) -> tuple[dict, "np.ndarray | range"]:
        """Columns for the chosen ``rows`` of one shard, and the rows to read from them."""
        return arrays, rows

    def compact(self, arrays: dict, row: int):
        """One frame as small numpy arrays (a copy: it must not pin the whole decoded shard)."""
        raise NotImplementedError

    def tensors(self, sample) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def columns(self, arrays: dict, rows) -> dict[str, np.ndarray]:
        """The chosen rows as the in-memory columns of an :class:`ArrayDataset`."""
        raise NotImplementedError

    def from_frames(self, keypoints: np.ndarray, image_size: int) -> Dataset:
        """An in-memory dataset over validated (N, 143, 3) frames of a raw keypoint file."""
        raise NotImplementedError

    def model_input(self, keypoints: np.ndarray) -> np.ndarray:
        """The model's input for (N, 143, 3) frames (what the first tensor of a sample holds)."""
        return np.ascontiguousarray(keypoints, dtype=np.float32)

    def usable_frames(self, keypoints: np.ndarray) -> np.ndarray:
        """:meth:`usable` for (N, 143, 3) frames of a raw keypoint file."""
        return self.usable({"keypoints": keypoints, "face": keypoints[:, layout.FACE]})

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SkeletonSamples(SampleKind):
    """``(keypoints (143, 3) float32, image (1, S, S) float32 in [0, 1])``."""

    name = "skeleton"
    input_shape = (layout.N_POINTS, 3)
    reads_images = True

    def compact(self, arrays, row):
        images = arrays["images"]
        if isinstance(images, PackedImages):
            # A streamed frame stays packed in the shuffle buffer (its mask row and lit values: ~11 KB at
            # 256 px instead of 64 KB); it is decoded when it leaves the buffer.
            lo, hi = images.offsets[row], images.offsets[row + 1]
            return arrays["keypoints"][row].copy(), PackedImages(images.mask[row:row + 1].copy(),
                                                                 images.values[lo:hi].copy(), images.width)
        return arrays["keypoints"][row].copy(), images[row]

    def tensors(self, sample):
        keypoints, image = sample
        return torch.from_numpy(keypoints), _image_tensor(image[0] if isinstance(image, PackedImages) else image)

    def columns(self, arrays, rows):
        return {"keypoints": arrays["keypoints"][rows], "images": arrays["images"][rows]}

    def from_frames(self, keypoints, image_size):
        return SkeletonDataset(keypoints, None, image_size=image_size)  # rendered on access


class FaceSamples(SampleKind):
    """``(face (68, 3) float32 normalised, the same tensor)``; frames without a face point are skipped."""

    name = "face"
    input_shape = (layout.N_FACE, 3)
    needs = "face landmarks"  # a frame without any face point has nothing to reconstruct
    counted_by = "face_frames"  # absent in manifests written before it was recorded

    def usable(self, arrays):
        return face_present(arrays["face"])

    def prepare(self, arrays, rows):
        # One vectorised normalisation per shard, not one call per frame.
        return {"face": normalize_face(arrays["face"][rows])}, range(len(rows))

    def compact(self, arrays, row):
        return arrays["face"][row].copy()

    def tensors(self, sample):
        face = torch.from_numpy(sample)
        return face, face

    def columns(self, arrays, rows):
        return {"face": normalize_face(arrays["face"][rows])}

    def from_frames(self, keypoints, image_size):
        return KeypointDataset(keypoints[:, layout.FACE], normalize=True)

    def model_input(self, keypoints):
        return normalize_face(keypoints[:, layout.FACE])


# The kinds a task may name by string (``ShardStream(..., task="face")``); a new task with a new kind
# passes its SampleKind object instead.
SAMPLE_KINDS: dict[str, SampleKind] = {kind.name: kind for kind in (SkeletonSamples(), FaceSamples())}


def sample_kind(kind: "str | SampleKind") -> SampleKind:
    if isinstance(kind, SampleKind):
        return kind
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"task must be one of {tuple(SAMPLE_KINDS)}, got {kind!r}")
    return SAMPLE_KINDS[kind]


def _rows_for(arrays: dict[str, np.ndarray], split: str | None, kind: SampleKind,
              first: int = 0, window: tuple[int, int] | None = None) -> np.ndarray:
    """Row indices of a decoded shard that belong to ``split``, are usable for ``kind`` and, with a
    ``window``, whose position in the split (``first`` = the position of the shard's first frame of
    the split) lies in ``[window[0], window[1])``."""
    in_split = np.ones(len(arrays["keypoints"]), dtype=bool) if split is None else arrays["split"] == split
    keep = kind.usable(arrays) & in_split
    if window is not None:
        position = first + np.cumsum(in_split) - 1
        keep &= (position >= window[0]) & (position < window[1])
    return np.flatnonzero(keep)


def _resolve_manifest(manifest_uri) -> Manifest:
    return manifest_uri if isinstance(manifest_uri, Manifest) else read_manifest(manifest_uri)


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("pass both rank and world_size, or neither")
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world_size = 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    return int(rank), int(world_size)


class ShardStream(IterableDataset):
    """Stream one split of a manifest's shards: ``ShardStream(manifest_uri, "train", task="skeleton")``.

    Partitioning: the consumers are the ``world_size`` DDP ranks times the DataLoader workers of each
    rank. The split's frames, in the epoch's shard order, are cut into one contiguous run per
    consumer (a shard at a cut is read by both neighbours, each keeping its part): consumers differ
    by at most one frame, ranks by at most one per worker, and each frame of the split is yielded
    exactly once per epoch over all consumers. (The face task's frames without a face are skipped
    after the cut, so its samples can differ a little more.)

    ``frames=(start, stop)`` keeps the frames at those positions of the split (input order): how a
    data set without a ``dev`` split is cut into training and validation.
    ``n_frames`` is the number of frames selected, ``n_samples`` the number of samples an epoch yields
    (the usable frames: the face task skips frames without a face), from the manifest's counts when it
    records them, else counted once by reading the shards' columns without their images.

    Memory per consumer, independent of the number of shards: ``1 + prefetch`` shards with their
    images still packed (:class:`signpose.shards.PackedImages`, ~13 KB a 256x256 frame) plus the
    shuffle buffer (``shuffle_buffer`` frames, their images packed too: ~12 KB each at 256x256).
    ``set_epoch(e)`` changes the shuffle (shard order, row order, buffer) like DistributedSampler.
    """

    def __init__(self, manifest_uri, split: str | None, task: str = "skeleton", shuffle: bool = True,
                 shuffle_buffer: int = 1024, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, prefetch: int = 1, verify: bool = True,
                 frames: tuple[int, int] | None = None):
        self.kind = sample_kind(task)
        manifest = _resolve_manifest(manifest_uri)
        self.store_uri = manifest.uri
        self.split = split
        self.task = self.kind.name
        placed = manifest.positions(split)
        if split is not None and not placed:
            raise ManifestInconsistentError(f"{manifest.uri}: split {split!r} has no frames (splits: "
                                            f"{manifest.splits}; the manifest lists no shard holding them)")
        total = sum(shard.frames_of(split) for shard, _ in placed)
        self.window = None if frames is None else (max(0, int(frames[0])), min(total, int(frames[1])))
        lo, hi = self.window or (0, total)
        # Only the shards with frames in the window; each with the split position of its first frame.
        self.first = {shard.key: first for shard, first in placed
                      if first < hi and first + shard.frames_of(split) > lo}
        self.shards: list[ShardInfo] = [shard for shard, _ in placed if shard.key in self.first]
        self.n_frames = max(0, hi - lo)
        self._n_samples: int | None = None
        self.image_size = manifest.image_size
        self.dataset_hash = manifest.dataset_hash
        self.shuffle = shuffle
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.seed = int(seed)
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        self.prefetch = max(0, int(prefetch))
        self.verify = verify
        self.epoch = 0

    @property
    def n_samples(self) -> int:
        """Samples in one epoch over all consumers (computed on first use, then kept)."""
        if self._n_samples is None:
            self._n_samples = self._count_samples()
        return self._n_samples

    def _count_samples(self) -> int:
        store, total = None, 0
        lo, hi = self.window or (0, self.n_frames)
        for shard in self.shards:
            first, size = self.first[shard.key], shard.frames_of(self.split)
            whole = lo <= first and first + size <= hi
            recorded = self.kind.recorded_count(shard, self.split) if whole else None
            if recorded is None and self.kind.every_frame:
                recorded = min(hi, first + size) - max(lo, first)
            if recorded is None:
                store = store or open_store(self.store_uri)
                arrays = read_shard(store, shard, self.verify, images=False)
                recorded = len(_rows_for(arrays, self.split, self.kind, first, self.window))
            total += recorded
        return total

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _consumer(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker_id = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker_id, self.world_size * workers

    def _assignment(self) -> list[tuple[ShardInfo, tuple[int, int]]]:
        """The (shard, split positions [start, stop)) this consumer reads in the current epoch: the
        window's frames, in the epoch's shard order, cut into one contiguous run per consumer, so
        consumers (and so ranks) differ by at most one frame each, and no frame is read twice."""
        consumer, consumers = self._consumer()
        shards = list(self.shards)
        if self.shuffle:
            # Same permutation on every consumer: derived from (seed, epoch) only.
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(shards))
            shards = [shards[i] for i in perm]
        lo, hi = self.window or (0, self.n_frames)
        spans, total = [], 0  # (shard, its first position in the window, frames before it this epoch)
        for shard in shards:
            first = self.first[shard.key]
            start, stop = max(lo, first), min(hi, first + shard.frames_of(self.split))
            spans.append((shard, start, total))
            total += stop - start
        mine = (consumer * total // consumers, (consumer + 1) * total // consumers)
        assignment = []
        for (shard, start, offset), end in zip(spans, [offset for _, _, offset in spans[1:]] + [total]):
            cut = max(mine[0], offset), min(mine[1], end)
            if cut[0] < cut[1]:
                assignment.append((shard, (start + cut[0] - offset, start + cut[1] - offset)))
        return assignment

    def __iter__(self) -> Iterator:
        assignment = self._assignment()
        places, (consumer, _) = {shard.key: place for shard, place in assignment}, self._consumer()
        rng = np.random.default_rng([self.seed, self.epoch, consumer, 1])
        # The buffer holds compact rows (images still packed); tensors are made only when yielded.
        buffer: list = []
        # A fresh client per iterator: a boto3 client forked into DataLoader workers would share sockets.
        store = open_store(self.store_uri)
        with ThreadPoolExecutor(max_workers=1) as fetcher:
            for shard, arrays in self._prefetched(store, [shard for shard, _ in assignment], fetcher):
                rows = _rows_for(arrays, self.split, self.kind, self.first[shard.key], places[shard.key])
                if self.shuffle:
                    rows = rng.permutation(rows)
                arrays, rows = self.kind.prepare(arrays, rows)
                for row in rows:
                    sample = self.kind.compact(arrays, int(row))
                    if not self.shuffle:
                        yield self.kind.tensors(sample)
                        continue
                    if len(buffer) < self.shuffle_buffer:
                        buffer.append(sample)
                        continue
                    slot = int(rng.integers(len(buffer)))
                    yield self.kind.tensors(buffer[slot])
                    buffer[slot] = sample
                del arrays
            for slot in rng.permutation(len(buffer)):
                yield self.kind.tensors(buffer[slot])

    def _prefetched(self, store: ObjectStore, shards: list[ShardInfo], fetcher: ThreadPoolExecutor
                    ) -> Iterator[tuple[ShardInfo, dict]]:
        # Fetch (download + verify + decode) the next shards in the background while this one is consumed.
        futures = []
        position = 0
        while position < len(shards) or futures:
            while position < len(shards) and len(futures) <= self.prefetch:
                futures.append(fetcher.submit(read_shard, store, shards[position], self.verify, True,
                                              self.kind.reads_images))
                position += 1
            yield shards[position - len(futures)], futures.pop(0).result()


class ArrayDataset(Dataset):
    """Map-style dataset over columns decoded from shards (see :func:`load_split`)."""

    def __init__(self, columns: dict[str, np.ndarray], task: "str | SampleKind"):
        self.kind = sample_kind(task)
        self.task = self.kind.name
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index: int):
        return self.kind.tensors(self.kind.compact(self.columns, index))


def load_split(manifest_uri, split: str, task: "str | SampleKind" = "skeleton",
               frames: tuple[int, int] | None = None) -> ArrayDataset:
    """One split fully in memory (images stay uint8: 64 KiB a frame at 256x256). For small data sets.
    ``frames=(start, stop)``: only the frames at those positions of the split, as in :class:`ShardStream`."""
    kind = sample_kind(task)
    manifest = _resolve_manifest(manifest_uri)
    store = open_store(manifest.uri)
    lo, hi = frames if frames is not None else (0, manifest.splits.get(split, 0))
    parts: list[dict[str, np.ndarray]] = []
    for shard, first in manifest.positions(split):
        if first >= hi or first + shard.frames_of(split) <= lo:
            continue
        arrays = read_shard(store, shard, images=kind.reads_images)
        parts.append(kind.columns(arrays, _rows_for(arrays, split, kind, first, frames)))
    if not parts:
        raise ManifestInconsistentError(f"{manifest.uri}: split {split!r} has no frames for task "
                                        f"{kind.name!r} (splits: {manifest.splits})")
    return ArrayDataset({name: np.concatenate([part[name] for part in parts]) for name in parts[0]}, kind)


def first_samples(dataset: Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (input, target) pairs of ``dataset`` (a stream: in its order), stacked."""
    if isinstance(dataset, IterableDataset):
        items = list(itertools.islice(iter(dataset), n))
    else:
        items = [dataset[i] for i in range(min(n, len(dataset)))]
    if not items:
        raise ValueError("the data set is empty: no samples to take")
    inputs = torch.stack([torch.as_tensor(item[0]) for item in items]).float()
    targets = torch.stack([torch.as_tensor(item[1]) for item in items]).float()
    return inputs, targets


__all__ = ["SkeletonDataset", "KeypointDataset", "normalize_face", "ShardStream", "ArrayDataset",
           "load_split", "first_samples", "SampleKind", "SkeletonSamples", "FaceSamples", "SAMPLE_KINDS", "sample_kind"]
