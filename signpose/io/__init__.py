"""Keypoint input: every supported source read, validated and converted into the 143-point layout.

Public API: :func:`read_keypoints`, :class:`KeypointFrames`, :class:`KeypointFormatError`,
:func:`load_pickle` (restricted unpickler). Formats and the coordinate convention: docs/data.md.
"""

from signpose.io.errors import KeypointFormatError
from signpose.io.frames import SPLITS, KeypointFrames, split_by_video
from signpose.io.readers import detect_format, read_keypoints
from signpose.io.safe_pickle import load_pickle, loads_pickle

__all__ = ["KeypointFormatError", "KeypointFrames", "SPLITS", "detect_format", "load_pickle", "split_by_video",
           "loads_pickle", "read_keypoints"]
