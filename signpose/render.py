"""Skeleton rasteriser: (143, 3) keypoints -> a one-channel uint8 skeleton image (OpenCV).

Interface (other modules rely on it): ``RenderSettings``, ``render_frame``, ``render_frames``,
``generate_skeleton_dataset`` and ``RENDERER_VERSION`` (part of the dataset hash).

How a frame is drawn (docs/data.md, "Rendering"):

* A point at ``(x, y)`` lands on pixel ``(x * S, y * S)`` (sub-pixel precise, OpenCV ``shift=4``).
* The bones of each part are drawn as a few connected polylines (the bone graph is decomposed into
  chains once), split wherever a point is missing: a bone is drawn only when both its endpoints have
  confidence above ``min_confidence``.
* Each part has its own grey level (``part_intensity``: face, left hand, right hand, pose), so one
  channel tells face, hands and body apart. Parts are drawn pose, face, right hand, left hand: hands
  end up on top where they cross the body or the face.
* ``antialias=True`` with thickness t > 1: 1-px anti-aliased polylines thickened by a grey-scale
  dilation (max filter) of t pixels give the soft edge, and an aliased polyline of thickness t - 1
  on top gives a solid core at the part's full grey level. This looks like OpenCV's thick
  anti-aliased lines at a quarter of their cost. ``antialias=False`` draws OpenCV's aliased thick
  lines; thickness 1 with antialias is OpenCV's 1-px anti-aliased line.
* ``confidence_scaled=True`` dims each bone to ``intensity * min(conf_a, conf_b)`` (8 levels).
* ``joints=True`` adds a dot of radius ``joint_radius`` (0 = the line thickness) at every present point.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache

import cv2
import numpy as np

from signpose import layout

# Bump when the pixels produced for the same input and settings change: it is part of the dataset hash.
RENDERER_VERSION = "2"

_SUBPIXEL_BITS = 4
_SCALE = 1 << _SUBPIXEL_BITS
# Drawing order: body first, hands last (on top).
_DRAW_ORDER = (3, 0, 2, 1)  # part ids: pose, face, right_hand, left_hand
_CONFIDENCE_LEVELS = 8


@dataclass(frozen=True)
class RenderSettings:
    image_size: int = 256
    thickness: int = 0  # 0 = auto, pose-format's round(sqrt(H*W)/150)
    antialias: bool = True
    # Grey level per part (face, left hand, right hand, pose): face, hands and body stay distinguishable.
    part_intensity: tuple[int, int, int, int] = (170, 255, 215, 110)
    joints: bool = False
    joint_radius: int = 0  # 0 = line thickness
    min_confidence: float = 0.0  # a point is drawn when its confidence is above this
    confidence_scaled: bool = False

    def __post_init__(self):
        if int(self.image_size) < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if len(self.part_intensity) != len(layout.PARTS) or not all(0 <= v <= 255 for v in self.part_intensity):
            raise ValueError(f"part_intensity must be {len(layout.PARTS)} values in 0..255")
        if self.thickness < 0 or self.joint_radius < 0:
            raise ValueError("thickness and joint_radius must be >= 0")

    @property
    def line_thickness(self) -> int:
        return self.thickness or max(1, round(np.sqrt(self.image_size * self.image_size) / 150))

    def to_dict(self) -> dict:
        return asdict(self)


def _decompose_into_chains(bones: list[tuple[int, int]]) -> list[list[int]]:
    """Cover every bone exactly once with as few vertex chains as a greedy walk finds."""
    adjacency: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, (a, b) in enumerate(bones):
        adjacency[a].append((b, i))
        adjacency[b].append((a, i))
    used: set[int] = set()

    def degree(v: int) -> int:
        return sum(1 for _, i in adjacency[v] if i not in used)

    chains = []
    while len(used) < len(bones):
        odd = [v for v in sorted(adjacency) if degree(v) % 2 == 1]
        start = odd[0] if odd else next(v for v in sorted(adjacency) if degree(v) > 0)
        chain, v = [start], start
        while True:
            step = next(((w, i) for w, i in adjacency[v] if i not in used), None)
            if step is None:
                break
            used.add(step[1])
            chain.append(step[0])
            v = step[0]
        chains.append(chain)
    return chains


@lru_cache(maxsize=1)
def _chain_tables():
    """Concatenated chain vertices in drawing order, with per-position part ids and chain breaks."""
    vertices, parts, breaks = [], [], []
    for part_id in _DRAW_ORDER:
        name = layout.PARTS[part_id]
        offset = layout.PART_SLICES[name].start
        for chain in _decompose_into_chains(list(layout.PART_BONES[name])):
            breaks.extend([False] * (len(chain) - 1) + [True])
            vertices.extend(v + offset for v in chain)
            parts.extend([part_id] * len(chain))
    link = ~np.asarray(breaks)[:-1]  # link[k]: positions k and k+1 belong to the same chain
    return np.asarray(vertices, dtype=np.int64), np.asarray(parts, dtype=np.int64), link


def _plan_pieces(present: np.ndarray) -> list[tuple[int, list[tuple[int, int]]]]:
    """Runs of consecutive drawable bones for a presence mask: [(part id, [(start, stop), ...]), ...].

    Positions index the concatenated chain vertices; stop is exclusive.
    """
    vertices, parts, link = _chain_tables()
    ok = present[vertices]
    drawable = link & ok[:-1] & ok[1:]  # the bone between chain positions k and k+1
    edges = np.diff(np.concatenate([[0], drawable.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1).tolist()
    stops = (np.flatnonzero(edges == -1) + 1).tolist()
    plan: list[tuple[int, list[tuple[int, int]]]] = []
    for start, stop in zip(starts, stops):
        part = int(parts[start])
        if not plan or plan[-1][0] != part:
            plan.append((part, []))
        plan[-1][1].append((start, stop))
    return plan


# Presence masks repeat (whole hands come and go, legs are always off-frame): plan each mask once.
_PLAN_CACHE: dict[bytes, list] = {}
_PLAN_CACHE_LIMIT = 4096


def _cached_plan(present: np.ndarray):
    """Per part in drawing order: (part id, slices of the chain positions to draw as polylines)."""
    key = present.tobytes()
    plan = _PLAN_CACHE.get(key)
    if plan is None:
        if len(_PLAN_CACHE) >= _PLAN_CACHE_LIMIT:
            _PLAN_CACHE.clear()
        plan = _PLAN_CACHE[key] = [(part, [slice(a, b) for a, b in runs]) for part, runs in _plan_pieces(present)]
    return plan


@lru_cache(maxsize=32)
def _kernel(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_RECT if size <= 2 else cv2.MORPH_ELLIPSE, (size, size))


# Frames are prepared (coordinates scaled, boxes found) this many at a time: vectorised numpy per block,
# bounded memory for any batch.
_BLOCK = 512


class _Painter:
    """What drawing a frame needs from the settings, derived once per batch instead of once per frame."""

    def __init__(self, settings: RenderSettings):
        self.settings = settings
        self.size = int(settings.image_size)
        self.thickness = settings.line_thickness
        self.dilated = settings.antialias and self.thickness > 1
        # A max filter of even size t spreads a line over [p - t//2, p + (t-1) - t//2]: pre-shift by half.
        offset = (self.thickness // 2 - (self.thickness - 1) / 2.0) if self.dilated else 0.0
        self.line_type = cv2.LINE_AA if settings.antialias else cv2.LINE_8
        self.draw_thickness = 1 if self.dilated else self.thickness
        # Fixed-point pixel coordinates (+0.5 then truncation = rounding; coordinates are >= 0).
        self.scale, self.bias = self.size * _SCALE, 0.5 - offset * _SCALE
        self.intensity = tuple(int(v) for v in settings.part_intensity)
        self.kernel = _kernel(self.thickness)
        # Lit pixels lie within ~2 px of a present point before the dilation, which spreads them by t:
        # dilating only the box around the points (plus this margin) gives the same pixels, cheaper.
        self.margin = self.thickness + 4

    def paint(self, keypoints: np.ndarray, images: np.ndarray, zeroed: bool = False) -> None:
        """Draw frames (N, 143, 3) float32 into images (N, S, S) uint8; ``zeroed``: already all 0."""
        for start in range(0, len(keypoints), _BLOCK):
            self._paint_block(keypoints[start:start + _BLOCK], images[start:start + _BLOCK], zeroed)

    def _paint_block(self, keypoints, images, zeroed):
        settings = self.settings
        present = keypoints[:, :, 2] > settings.min_confidence
        if settings.confidence_scaled:
            soft = (keypoints[:, :, :2] * self.scale + self.bias).astype(np.int32, order="C")
            core = (keypoints[:, :, :2] * self.scale + 0.5).astype(np.int32, order="C")
        else:
            chain_xy = keypoints[:, _chain_tables()[0], :2] * self.scale
            # C order: OpenCV takes each run's rows as one contiguous (n, 2) int32 polyline.
            soft = (chain_xy + self.bias).astype(np.int32, order="C")
            core = (chain_xy + 0.5).astype(np.int32, order="C") if self.dilated else None
        boxes = self._boxes(keypoints, present) if self.dilated else None
        for i, image in enumerate(images):
            if not zeroed:
                image.fill(0)
            conf, frame_present = keypoints[i, :, 2], present[i]
            plan = None if settings.confidence_scaled else _cached_plan(frame_present)
            self._draw_bones(image, soft[i], conf, frame_present, plan, self.draw_thickness, self.line_type)
            if self.dilated:
                y0, y1, x0, x1 = boxes[i]
                if y1 > y0 and x1 > x0:
                    roi = image[y0:y1, x0:x1]
                    cv2.dilate(roi, self.kernel, dst=roi)  # in place
                # The dilated 1-px line is the soft edge; its peak depends on the sub-pixel position. A
                # solid core of thickness t - 1 drawn on top gives the full grey level along the bone.
                self._draw_bones(image, core[i], conf, frame_present, plan, self.thickness - 1, cv2.LINE_8)
            if settings.joints:
                _draw_joints(image, keypoints[i], frame_present, settings)

    def _draw_bones(self, image, points, conf, present, plan, thickness, line_type):
        """One pass over a frame's drawable bones: per part along the chain ``plan`` (``points`` are
        the chain positions), or with ``confidence_scaled`` per bone at intensity x min endpoint
        confidence, quantised to a few levels (``points`` are the 143 points)."""
        if plan is not None:
            for part, runs in plan:
                cv2.polylines(image, [points[r] for r in runs], False, self.intensity[part], thickness, line_type,
                              _SUBPIXEL_BITS)
            return
        for part_id in _DRAW_ORDER:
            bones = layout.BONES[layout.BONE_PART_IDS == part_id]
            bones = bones[present[bones[:, 0]] & present[bones[:, 1]]]
            if len(bones) == 0:
                continue
            level = np.ceil(np.minimum(conf[bones[:, 0]], conf[bones[:, 1]]).clip(0, 1) * _CONFIDENCE_LEVELS)
            for value in np.unique(level):
                selected = bones[level == value]
                intensity = int(round(self.intensity[part_id] * value / _CONFIDENCE_LEVELS))
                cv2.polylines(image, list(points[selected]), False, intensity, thickness, line_type, _SUBPIXEL_BITS)

    def _boxes(self, keypoints, present) -> np.ndarray:
        """(N, 4) pixel boxes y0, y1, x0, x1 around each frame's present points plus the margin."""
        boxes = []
        for axis in (1, 0):  # y, then x; 2-D (N, 143) reductions along the contiguous axis are fast
            coordinate = keypoints[:, :, axis] * np.float32(self.size)
            low = np.floor(np.where(present, coordinate, np.inf).min(axis=1)) - self.margin
            high = np.ceil(np.where(present, coordinate, -np.inf).max(axis=1)) + self.margin + 1
            # No point present: an empty box. A NaN coordinate: the whole image.
            boxes.append(np.nan_to_num(low, nan=0.0, posinf=self.size, neginf=0.0).clip(0, self.size))
            boxes.append(np.nan_to_num(high, nan=self.size, posinf=self.size, neginf=0.0).clip(0, self.size))
        return np.stack(boxes, axis=1).astype(np.int64)


def render_frame(keypoints: np.ndarray, settings: RenderSettings = RenderSettings(),
                 out: np.ndarray | None = None) -> np.ndarray:
    """Draw one frame; a bone with an endpoint at or below ``min_confidence`` is not drawn."""
    size = int(settings.image_size)
    image = np.zeros((size, size), dtype=np.uint8) if out is None else out
    _Painter(settings).paint(np.asarray(keypoints, dtype=np.float32)[None], image[None], zeroed=out is None)
    return image


def _draw_joints(image, keypoints, present, settings):
    size = image.shape[0]
    radius = settings.joint_radius or settings.line_thickness
    dots = np.zeros_like(image)
    idx = np.flatnonzero(present)
    # Draw in drawing order so hands win where dots overlap.
    rank = np.empty(len(_DRAW_ORDER), dtype=np.int64)
    rank[list(_DRAW_ORDER)] = np.arange(len(_DRAW_ORDER))
    idx = idx[np.argsort(rank[layout.PART_IDS[idx]], kind="stable")]
    xy = np.clip(np.round(keypoints[idx, :2] * size).astype(np.int64), 0, size - 1)
    dots[xy[:, 1], xy[:, 0]] = np.asarray(settings.part_intensity, dtype=np.uint8)[layout.PART_IDS[idx]]
    dots = cv2.dilate(dots, _kernel(2 * radius + 1))
    np.maximum(image, dots, out=image)


# The output array of the render_frames call in progress: forked workers inherit it and write into it
# (it lives in an anonymous shared mapping), so no pixels are pickled or copied back.
_SHARED_OUTPUT: np.ndarray | None = None
_POOL_LOCK = threading.Lock()  # one pooled render at a time per process: they share the global above


def _start_worker() -> None:
    cv2.setNumThreads(0)  # one process per core already


def _render_chunk(args) -> int:
    start, keypoints, settings = args
    # The shared mapping starts zero-filled.
    _Painter(settings).paint(keypoints, _SHARED_OUTPUT[start:start + len(keypoints)], zeroed=True)
    return len(keypoints)


def render_frames(keypoints: np.ndarray, settings: RenderSettings = RenderSettings(),
                  workers: int | None = None, progress=None) -> np.ndarray:
    """(N, 143, 3) -> (N, S, S) uint8. ``workers`` > 1 renders chunks in a process pool.

    The workers are forked and write straight into a shared anonymous mapping that becomes the
    returned array: only keypoints travel to them, nothing is copied back, and the pixels equal
    the single-process result. Forking (not spawn) means no re-import of the caller's ``__main__``
    (spawn breaks scripts without a main guard); the workers use only numpy and OpenCV (its threads
    off), so threads in the parent (torch, OpenMP) are not touched. Where fork does not exist the
    frames are rendered in this process. ``progress``: optional callable(n_done) per finished chunk.
    """
    global _SHARED_OUTPUT
    keypoints = np.asarray(keypoints, dtype=np.float32)
    n, size = len(keypoints), int(settings.image_size)
    workers = 1 if workers is None else max(1, int(workers))
    from multiprocessing import get_all_start_methods, get_context

    if workers == 1 or n < 64 or "fork" not in get_all_start_methods():
        out = np.zeros((n, size, size), dtype=np.uint8)
        _Painter(settings).paint(keypoints, out, zeroed=True)
        if progress is not None:
            progress(n)
        return out
    import mmap

    shared = mmap.mmap(-1, n * size * size)  # MAP_SHARED | MAP_ANONYMOUS: visible across fork
    out = np.frombuffer(shared, dtype=np.uint8).reshape(n, size, size)  # keeps the mapping alive
    chunk = max(16, -(-n // (workers * 4)))
    jobs = [(s, keypoints[s:s + chunk], settings) for s in range(0, n, chunk)]
    with _POOL_LOCK:
        _SHARED_OUTPUT = out
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"),
                                     initializer=_start_worker) as pool:
                for done in pool.map(_render_chunk, jobs):
                    if progress is not None:
                        progress(done)
        finally:
            _SHARED_OUTPUT = None
    return out


def default_workers() -> int:
    """Cores this process may use (the cgroup/affinity-aware count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def generate_skeleton_dataset(keypoints_data, image_size: int = 256) -> np.ndarray:
    """Seed-compatible: list of per-frame dicts or (N, 143, 3) -> (N, S, S) float32 in [0, 1]."""
    if isinstance(keypoints_data, np.ndarray):
        frames = keypoints_data.astype(np.float32)
    else:
        frames = np.stack([layout.flatten_frame(f) for f in keypoints_data])
    images = render_frames(frames, RenderSettings(image_size=image_size)).astype(np.float32)
    return np.divide(images, 255.0, out=images)  # in place: the seed's float32 copy is already 4x the uint8
