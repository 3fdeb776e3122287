"""OpenPose JSON output: a folder of ``<video>_<frame number>_keypoints.json`` files (or one such file).

Each file: ``{"people": [{"pose_keypoints_2d": [x, y, c] * 25, "face_keypoints_2d": [...] * 70,
"hand_left_keypoints_2d": [...] * 21, "hand_right_keypoints_2d": [...] * 21}, ...]}``; an empty list
means that part was not run or not found. Of several people the one with the highest summed body
confidence is taken. Points map into the layout as for OpenPose .pose files. Frames are ordered by the
number in the file name (``frame_index``), the video id is the folder name. OpenPose JSON carries no
frame size: pass ``frame_size=(W, H)``, otherwise the folder's extent is used (see checks.py).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from signpose.io import checks
from signpose.io.atomic import atomic_write_bytes
from signpose.io.errors import KeypointFormatError
from signpose.io.frames import KeypointFrames
from signpose.io.limits import FrameBudget
from signpose.io.pose_files import openpose_to_layout, video_frames
from signpose.io.report import ReadReport
from signpose.io.safe_files import folder_members, read_regular

PART_KEYS: dict[str, tuple[int, ...]] = {
    "pose_keypoints_2d": (25,), "face_keypoints_2d": (70, 68),
    "hand_left_keypoints_2d": (21,), "hand_right_keypoints_2d": (21,),
}
_FRAME_NUMBER = re.compile(r"(\d{1,18})_keypoints\.json$")
# One frame's JSON: a few kB per person; more than this is not an OpenPose frame.
MAX_FRAME_FILE_BYTES = 8 << 20
MAX_PEOPLE = 1024


def read_openpose_json(path, frame_size=None, *, budget: FrameBudget | None = None,
                       report: ReadReport | None = None) -> KeypointFrames:
    root = Path(os.fspath(path))
    if root.is_dir():
        files = folder_members(root, "*_keypoints.json")
        if not files:
            raise KeypointFormatError(str(root), "directory holds no OpenPose *_keypoints.json files")
        video_id = root.name
    else:
        files, video_id = [root], re.sub(r"(_\d+)?_keypoints$", "", root.stem)
    numbers = [_frame_number(f) for f in files]
    if all(n is not None for n in numbers):
        order = np.argsort(numbers, kind="stable")
        files, numbers = [files[i] for i in order], [numbers[i] for i in order]
        if len(set(numbers)) != len(numbers):
            dup = next(n for n in numbers if numbers.count(n) > 1)
            raise KeypointFormatError(str(root), f"two files claim frame number {dup}", field="file name")
        frame_index = np.asarray(numbers, dtype=np.int64)
    else:
        frame_index = np.arange(len(files))
    (budget or FrameBudget()).take(str(root), len(files), what="frame files")
    kp = np.stack([_read_frame(str(f), i) for i, f in zip(frame_index.tolist(), files)])
    checks.check_finite_and_confidence(kp, file=str(root), sample_ids=frame_index)
    _, info = checks.normalise_coordinates(kp, file=str(root), frame_size=frame_size, sample_ids=frame_index,
                                           part_names=_JSON_FIELDS)
    return video_frames(kp, str(root), "openpose-json", video_id=video_id, frame_index=frame_index, info=info,
                        report=report)


def _frame_number(path: Path) -> int | None:
    match = _FRAME_NUMBER.search(path.name)
    return int(match.group(1)) if match else None


_JSON_FIELDS = {"face": "face_keypoints_2d", "left_hand": "hand_left_keypoints_2d",
                "right_hand": "hand_right_keypoints_2d", "pose": "pose_keypoints_2d"}


def _read_frame(file: str, sample: int) -> np.ndarray:
    data = read_regular(file, max_bytes=MAX_FRAME_FILE_BYTES, what="JSON frame file")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError, and integers of over 4300 digits
        raise KeypointFormatError(file, f"not valid JSON (truncated or corrupt): {err}", sample=sample) from None
    except RecursionError:
        raise KeypointFormatError(file, "not valid keypoint JSON: nested too deeply", sample=sample) from None
    if not isinstance(doc, dict) or "people" not in doc:
        raise KeypointFormatError(file, "expected an object with a 'people' list", sample=sample, field="people")
    people = doc["people"]
    if not isinstance(people, list):
        raise KeypointFormatError(file, f"expected a list, got {type(people).__name__}", sample=sample,
                                  field="people")
    if not people:
        return np.zeros((143, 3), dtype=np.float32)  # nobody detected: an empty frame, dropped later
    if len(people) > MAX_PEOPLE:
        raise KeypointFormatError(file, f"{len(people)} people in one frame; at most {MAX_PEOPLE} are read",
                                  sample=sample, field="people")
    persons = [_read_person(file, sample, k, person) for k, person in enumerate(people)]
    best = max(range(len(persons)), key=lambda k: float(persons[k][0][:, 2].sum()))
    body, face, left, right = persons[best]
    return openpose_to_layout(body[None], face[None], left[None], right[None])[0]


def _read_person(file: str, sample: int, k: int, person) -> list[np.ndarray]:
    if not isinstance(person, dict):
        raise KeypointFormatError(file, f"person {k}: expected an object, got {type(person).__name__}",
                                  sample=sample, field="people")
    parts = []
    for key, sizes in PART_KEYS.items():
        if key not in person:
            if key == "pose_keypoints_2d":
                raise KeypointFormatError(file, f"person {k}: missing key", sample=sample, field=key)
            values = []
        else:
            values = person[key]
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values):
            raise KeypointFormatError(file, f"person {k}: expected a flat list of numbers", sample=sample,
                                      field=key)
        if not values:
            parts.append(np.zeros((sizes[0], 3), dtype=np.float32))
            continue
        if len(values) not in [3 * s for s in sizes]:
            raise KeypointFormatError(file, f"person {k}: expected {' or '.join(str(3 * s) for s in sizes)} "
                                      f"numbers ({'/'.join(map(str, sizes))} points x 3), got {len(values)}",
                                      sample=sample, field=key)
        try:
            arr = np.asarray(values, dtype=np.float32).reshape(-1, 3)
        except OverflowError:
            raise KeypointFormatError(file, f"person {k}: a number too large for a coordinate", sample=sample,
                                      field=key) from None
        if len(arr) < sizes[0]:  # a 68-point face
            arr = np.concatenate([arr, np.zeros((sizes[0] - len(arr), 3), np.float32)])
        parts.append(arr)
    return parts


def write_openpose_json(folder, kp: np.ndarray, width: int, height: int, video_id: str = "video") -> list[str]:
    """(T, 143, 3) -> ``folder/<video_id>_<000000000000>_keypoints.json`` per frame (pixel coordinates)."""
    from signpose.io.pose_files import _to_pixels, layout_to_openpose

    body, face, left, right = layout_to_openpose(_to_pixels(kp, width, height))
    paths = []
    for t in range(len(kp)):
        person = {"person_id": [-1]}
        for key, arr in zip(PART_KEYS, (body[t], face[t], left[t], right[t])):
            person[key] = [round(float(v), 4) for v in arr.reshape(-1)]
        doc = {"version": 1.3, "people": [person] if (kp[t, :, 2] > 0).any() else []}
        path = os.path.join(os.fspath(folder), f"{video_id}_{t:012d}_keypoints.json")
        atomic_write_bytes(path, json.dumps(doc).encode())
        paths.append(path)
    return paths
