"""Shards and manifest: round trip, commit order, idempotence, resume, byte-identical re-runs."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from signpose import layout, shards
from signpose.io import KeypointFrames
from signpose.render import RenderSettings, render_frames
from signpose.shards import (
    MANIFEST_NAME,
    READABLE_SHARD_FORMATS,
    ManifestNotFoundError,
    ShardCorruptError,
    ShardError,
    compute_dataset_hash,
    merge_manifest,
    plan_dataset,
    plan_shards,
    read_manifest,
    read_shard,
    write_dataset,
    write_shard_range,
)
from signpose.shards.codec import XZ, ZSTD, StreamCodec
from signpose.shards.format import SHARD_FORMAT_V2, STORED_FIELDS_V2
from signpose.store import open_store

SETTINGS = RenderSettings(image_size=48)


def make_frames(splits=(("train", 23), ("dev", 9), ("test", 5)), seed=0, interleave=True
                ) -> KeypointFrames:
    """Unique skeleton-like frames; some hands missing (confidence 0, coordinates 0)."""
    rng = np.random.default_rng(seed)
    names = np.concatenate([[name] * count for name, count in splits])
    if interleave:
        names = rng.permutation(names)
    n = len(names)
    keypoints = np.zeros((n, layout.N_POINTS, 3), np.float32)
    keypoints[:, :, :2] = rng.uniform(0.2, 0.8, (n, layout.N_POINTS, 2))
    keypoints[:, :, 2] = rng.uniform(0.5, 1.0, (n, layout.N_POINTS))
    missing_left = rng.random(n) < 0.3
    keypoints[missing_left, layout.LEFT_HAND] = 0.0
    return KeypointFrames(keypoints=keypoints, split=names.astype(str),
                          video_id=np.array([f"video{i // 7:03d}" for i in range(n)]),
                          frame_index=np.arange(n, dtype=np.int64) % 7, source="test-frames")


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "dataset")
    return request.getfixturevalue("s3_bucket") + "/datasets/one"


def read_all(manifest):
    parts = [read_shard(manifest.uri, s) for s in manifest.shards]
    return {name: np.concatenate([p[name] for p in parts]) for name in shards.SHARD_FIELDS}


def shard_bytes(uri, manifest):
    store = open_store(uri)
    return {s.key: store.get_bytes(s.key) for s in manifest.shards}


def grouped(frames):
    order = shards._split_order(frames.split)
    return {"keypoints": frames.keypoints[order], "split": frames.split[order],
            "video_id": frames.video_id[order], "frame_index": frames.frame_index[order]}


def test_plan_shards_covers_every_frame_once():
    assert plan_shards(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert plan_shards(0, 4) == []
    with pytest.raises(ValueError):
        plan_shards(10, 0)


def test_write_then_read_round_trips_every_field(store_uri):
    frames = make_frames()
    manifest = write_dataset(frames, store_uri, SETTINGS, shard_size=8, workers=1, progress=False)
    assert manifest.splits == {"train": 23, "dev": 9, "test": 5}
    assert manifest.n_frames == 37 and manifest.image_size == 48
    assert manifest.render_settings() == SETTINGS
    assert sum(s.count for s in manifest.shards) == 37
    data, expected = read_all(manifest), grouped(frames)
    np.testing.assert_array_equal(data["keypoints"], expected["keypoints"])
    np.testing.assert_array_equal(data["face"], expected["keypoints"][:, layout.FACE])
    np.testing.assert_array_equal(data["images"], render_frames(expected["keypoints"], SETTINGS))
    np.testing.assert_array_equal(data["split"], expected["split"])
    np.testing.assert_array_equal(data["video_id"], expected["video_id"])
    np.testing.assert_array_equal(data["frame_index"], expected["frame_index"])
    assert data["images"].dtype == np.uint8 and data["images"].max() > 0
    # The manifest read back equals the one returned.
    assert read_manifest(store_uri) == manifest
    assert read_manifest(manifest.uri + "/" + MANIFEST_NAME) == manifest


def test_no_shard_crosses_a_split_boundary(tmp_path):
    manifest = write_dataset(make_frames(), tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    assert all(len(s.splits) == 1 for s in manifest.shards)
    assert [s.count for s in manifest.shards_for("dev")] == [8, 1]
    for shard in manifest.shards:
        assert set(read_shard(tmp_path, shard)["split"]) == set(shard.splits)


def test_shards_hold_no_pickled_objects_and_fixed_width_strings(tmp_path):
    manifest = write_dataset(make_frames(), tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    raw = open_store(tmp_path).get_bytes(manifest.shards[0].key)
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        assert list(npz.files) == list(shards.STORED_FIELDS)
        assert npz["split"].dtype.kind == "U" and npz["video_id"].dtype.kind == "U"


def test_manifest_is_written_last(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    written = []
    original, create = type(store).put_bytes, type(store).put_if_absent
    monkeypatch.setattr(type(store), "put_bytes", lambda self, key, data: (written.append(key),
                                                                           original(self, key, data)))
    # The manifest is created with a conditional write (one data set per prefix: signpose.shards.commit).
    monkeypatch.setattr(type(store), "put_if_absent", lambda self, key, data: (written.append(key),
                                                                               create(self, key, data))[1])
    write_dataset(make_frames(), store, SETTINGS, shard_size=8, workers=1, progress=False)
    assert written[-1] == MANIFEST_NAME and written.count(MANIFEST_NAME) == 1
    assert sum(k.endswith(".npz") for k in written) == 6


def test_same_input_and_settings_skip_all_work(store_uri, monkeypatch):
    frames = make_frames()
    first = write_dataset(frames, store_uri, SETTINGS, shard_size=8, workers=1, progress=False)
    monkeypatch.setattr(shards.write, "build_shard", lambda *a: pytest.fail("rendered again"))
    monkeypatch.setattr(shards.write, "write_shard_range", lambda *a, **k: pytest.fail("wrote again"))
    second = write_dataset(frames, store_uri, SETTINGS, shard_size=8, workers=1, progress=False)
    assert second == first and second.created_at == first.created_at


def test_changed_settings_or_input_make_a_new_data_set(tmp_path):
    frames = make_frames()
    first = write_dataset(frames, tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    thicker = write_dataset(frames, tmp_path, RenderSettings(image_size=48, thickness=3), shard_size=8,
                            workers=1, progress=False, replace=True)  # one data set per store prefix
    assert thicker.dataset_hash != first.dataset_hash
    assert read_manifest(tmp_path).dataset_hash == thicker.dataset_hash
    frames.keypoints[0, 0, 0] += 0.01
    assert compute_dataset_hash(frames, SETTINGS, 8) != first.dataset_hash


def test_dataset_hash_covers_renderer_version_and_shard_size(monkeypatch):
    frames = make_frames()
    base = compute_dataset_hash(frames, SETTINGS, 8)
    assert compute_dataset_hash(make_frames(), SETTINGS, 8) == base
    assert compute_dataset_hash(frames, SETTINGS, 9) != base
    frames.video_id = frames.video_id.copy()
    frames.video_id[3] = "other"
    assert compute_dataset_hash(frames, SETTINGS, 8) != base
    monkeypatch.setattr(shards.plan, "RENDERER_VERSION", "changed")
    assert compute_dataset_hash(make_frames(), SETTINGS, 8) != base


def test_rerun_into_a_fresh_store_is_byte_identical(tmp_path):
    frames = make_frames()
    a = write_dataset(frames, tmp_path / "a", SETTINGS, shard_size=8, workers=1, progress=False)
    b = write_dataset(frames, tmp_path / "b", SETTINGS, shard_size=8, workers=1, progress=False)
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    assert shard_bytes(tmp_path / "a", a) == shard_bytes(tmp_path / "b", b)


def test_process_pool_writes_the_same_bytes_as_one_process(tmp_path):
    frames = make_frames()
    single = write_dataset(frames, tmp_path / "one", SETTINGS, shard_size=8, workers=1, progress=False)
    pooled = write_dataset(frames, tmp_path / "pool", SETTINGS, shard_size=8, workers=2, progress=False)
    assert single.shards == pooled.shards
    assert shard_bytes(tmp_path / "one", single) == shard_bytes(tmp_path / "pool", pooled)


class SimulatedCrash(Exception):
    pass


def test_crash_leaves_no_manifest_and_rerun_writes_only_missing_shards(store_uri, tmp_path, monkeypatch):
    frames = make_frames()
    store = open_store(store_uri)
    original = type(store).put_bytes
    shard_puts = []

    def crash_after_three_shards(self, key, data):
        if key.endswith(".npz"):
            if len(shard_puts) == 3:
                raise SimulatedCrash(key)
            shard_puts.append(key)
        return original(self, key, data)

    monkeypatch.setattr(type(store), "put_bytes", crash_after_three_shards)
    with pytest.raises(SimulatedCrash):
        write_dataset(frames, store_uri, SETTINGS, shard_size=8, workers=1, progress=False)
    with pytest.raises(ManifestNotFoundError):
        read_manifest(store_uri)

    rewritten = []
    monkeypatch.setattr(type(store), "put_bytes", lambda self, key, data: (
        rewritten.append(key) if key.endswith(".npz") else None, original(self, key, data)))
    resumed = write_dataset(frames, store_uri, SETTINGS, shard_size=8, workers=1, progress=False)
    monkeypatch.undo()
    assert set(rewritten).isdisjoint(shard_puts) and len(rewritten) == len(resumed.shards) - 3
    clean = write_dataset(frames, tmp_path / "clean", SETTINGS, shard_size=8, workers=1, progress=False)
    assert resumed.shards == clean.shards
    assert shard_bytes(store_uri, resumed) == shard_bytes(tmp_path / "clean", clean)


def test_resume_rewrites_a_damaged_shard(tmp_path):
    frames = make_frames()
    plan = plan_dataset(frames, SETTINGS, 8)
    write_shard_range(frames, tmp_path, SETTINGS, [0, 1], shard_size=8, workers=1, progress=False)
    store = open_store(tmp_path)
    good = store.get_bytes(plan.shard_key(1))
    store.put_bytes(plan.shard_key(1), good[:-10] + b"0123456789")
    manifest = write_dataset(frames, tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    assert store.get_bytes(plan.shard_key(1)) == good
    read_shard(tmp_path, manifest.shards[1])


def test_corrupt_shard_is_a_clear_error_naming_it(store_uri):
    manifest = write_dataset(make_frames(), store_uri, SETTINGS, shard_size=8, workers=1, progress=False)
    store = open_store(store_uri)
    victim = manifest.shards[2]
    data = bytearray(store.get_bytes(victim.key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(victim.key, bytes(data))
    with pytest.raises(ShardCorruptError, match=victim.key) as error:
        read_shard(store_uri, victim)
    assert "checksum mismatch" in str(error.value)
    store.delete(victim.key)
    with pytest.raises(ShardError, match="missing"):
        read_shard(store_uri, victim)


def test_shard_with_pickled_objects_is_refused():
    buffer = io.BytesIO()
    np.savez(buffer, keypoints=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ShardCorruptError, match="shard x"):
        shards.decode_shard(buffer.getvalue(), "shard x")


def test_zip_entries_carry_a_fixed_timestamp(tmp_path):
    manifest = write_dataset(make_frames(), tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    with zipfile.ZipFile(io.BytesIO(open_store(tmp_path).get_bytes(manifest.shards[0].key))) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_bad_input_error_names_the_field(tmp_path):
    frames = make_frames()
    frames.keypoints = frames.keypoints[:, :100]
    with pytest.raises(ValueError, match="test-frames.*'keypoints'.*143"):
        write_dataset(frames, tmp_path, SETTINGS, progress=False)
    frames = make_frames()
    frames.video_id = frames.video_id[:-1]
    with pytest.raises(ValueError, match="'video_id'"):
        write_dataset(frames, tmp_path, SETTINGS, progress=False)


def test_fan_out_ranges_merge_into_the_same_manifest(store_uri, tmp_path):
    frames = make_frames()
    plan = plan_dataset(frames, SETTINGS, 8)
    first = write_shard_range(frames, store_uri, SETTINGS, range(0, 3), shard_size=8, workers=1,
                              progress=False)
    assert [s.index for s in first] == [0, 1, 2]
    with pytest.raises(ShardError, match=plan.shard_key(3)):
        merge_manifest(store_uri, plan.dataset_hash)
    write_shard_range(frames, store_uri, SETTINGS, range(3, plan.n_shards), shard_size=8, workers=1,
                      progress=False)
    merged = merge_manifest(store_uri)
    whole = write_dataset(frames, tmp_path / "whole", SETTINGS, shard_size=8, workers=1, progress=False)
    assert merged.shards == whole.shards and merged.dataset_hash == whole.dataset_hash
    assert merged.splits == whole.splits
    assert merge_manifest(store_uri, plan.dataset_hash).created_at == merged.created_at  # no-op


def test_manifest_json_has_the_documented_fields(tmp_path):
    write_dataset(make_frames(), tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert {"schema_version", "dataset_hash", "image_size", "render", "splits", "shards", "created_at",
            "n_frames", "shard_size", "renderer_version", "shard_format"} <= set(data)
    shard = data["shards"][0]
    assert {"key", "count", "bytes", "sha256", "splits"} <= set(shard)
    blob = (tmp_path / shard["key"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == shard["sha256"] and len(blob) == shard["bytes"]


def test_unsupported_schema_version_is_refused(tmp_path):
    write_dataset(make_frames(), tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    data["schema_version"] = 99
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ShardError, match="schema_version 99"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("shape", [(3, 45, 45), (2, 64, 64), (0, 16, 16), (1, 1, 1)])
def test_image_encoding_is_lossless(shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    images[rng.random(shape) < 0.9] = 0  # mostly dark, like skeletons
    if shape[0]:
        images[0] = 0  # an empty frame
    np.testing.assert_array_equal(shards.decode_images(shards.encode_images(images)), images)
    full = np.full(shape, 255, np.uint8)
    np.testing.assert_array_equal(shards.decode_images(shards.encode_images(full)), full)


@pytest.mark.parametrize("n", [0, 1, 37])
def test_points_encoding_is_bit_exact(n):
    rng = np.random.default_rng(n)
    keypoints = rng.normal(size=(n, layout.N_POINTS, 3)).astype(np.float32)
    if n:
        keypoints[0, :5] = [np.nan, np.inf, -0.0]  # odd bit patterns survive too
    face = rng.random((n, layout.N_FACE, 3), dtype=np.float32)  # need not repeat the keypoints
    got_keypoints, got_face = shards.decode_points(shards.encode_points(keypoints, face), n)
    assert got_keypoints.dtype == np.float32 and got_keypoints.flags.c_contiguous
    assert got_keypoints.tobytes() == keypoints.tobytes() and got_face.tobytes() == face.tobytes()


def test_points_stream_is_less_than_half_the_deflated_columns():
    import zlib

    from signpose.synth import generate_signer_frames

    keypoints = generate_signer_frames(n_videos=4, frames_per_video=64, seed=0).keypoints.astype(np.float32)
    face = np.ascontiguousarray(keypoints[:, layout.FACE])
    deflated = len(zlib.compress(keypoints.tobytes(), 6)) + len(zlib.compress(face.tobytes(), 6))
    assert len(shards.encode_points(keypoints, face)) < deflated / 2


def test_points_stream_of_the_wrong_length_is_a_corrupt_shard():  # xz (v2); zstd: test_damaged_zstd_streams_...
    stream = shards.encode_points(np.zeros((3, layout.N_POINTS, 3), np.float32),
                                  np.zeros((3, layout.N_FACE, 3), np.float32), XZ)
    with pytest.raises(ShardCorruptError, match="shard z: field 'points_xz' holds .* expected .* for 4 frames"):
        shards.decode_points(stream, 4, "shard z", XZ)
    with pytest.raises(ShardCorruptError, match="shard z: field 'points_xz' cannot be decompressed"):
        shards.decode_points(stream[:-8], 3, "shard z", XZ)
    with pytest.raises(ShardCorruptError, match="shard z: field 'points_xz' cannot be decompressed"):
        shards.decode_points(np.frombuffer(b"not xz", np.uint8), 3, "shard z", XZ)


@pytest.mark.parametrize("codec", [XZ, ZSTD], ids=lambda c: c.name)
def test_a_stream_that_inflates_beyond_the_shard_shape_is_refused_without_inflating_it(codec):
    big = np.zeros((20_000, layout.N_POINTS, 3), np.float32)  # 34 MB of zeros, a few KB of xz
    stream = shards.encode_points(big, big[:, layout.FACE], codec)
    with pytest.raises(ShardCorruptError, match="would decompress to more than the 7596 bytes"):
        shards.decode_points(stream, 3, "shard z", codec)
    images = shards.encode_images(np.zeros((2000, 64, 64), np.uint8) + 1, codec)
    images["images_shape"] = np.array([1, 64, 64])
    with pytest.raises(ShardCorruptError, match="image streams would decompress to more than"):
        shards.decode_images(images, "shard z")


def test_reading_without_images_skips_their_streams(tmp_path):
    manifest = write_dataset(make_frames(), tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    full = read_shard(tmp_path, manifest.shards[0])
    light = read_shard(tmp_path, manifest.shards[0], images=False)
    assert "images" not in light and set(light) == set(full) - {"images"}
    np.testing.assert_array_equal(light["face"], full["face"])
    # Proof the image streams are not even decompressed: garbage there goes unnoticed without images.
    stored = dict(np.load(io.BytesIO(open_store(tmp_path).get_bytes(manifest.shards[0].key)), allow_pickle=False))
    stored["images_values_zst"] = np.frombuffer(b"not zstd at all", np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **stored)
    np.testing.assert_array_equal(shards.decode_shard(buffer.getvalue(), images=False)["keypoints"],
                                  full["keypoints"])
    with pytest.raises(ShardCorruptError, match="image streams cannot be decompressed"):
        shards.decode_shard(buffer.getvalue())


def test_shards_of_the_first_format_are_still_read():
    frames = make_frames()
    keypoints = frames.keypoints[:6].astype(np.float32)
    arrays = {"keypoints": keypoints, "face": np.ascontiguousarray(keypoints[:, layout.FACE]),
              "split": np.asarray(["train"] * 6), "video_id": np.asarray([f"v{i}" for i in range(6)]),
              "frame_index": np.arange(6, dtype=np.int64)}
    images = render_frames(keypoints, SETTINGS)
    v1 = dict(arrays, **shards.encode_images(images, XZ))  # the v1 layout: plain .npy keypoints and face
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{name: v1[name] for name in shards.STORED_FIELDS_V1})
    decoded = shards.decode_shard(buffer.getvalue(), "old shard")
    for name, value in dict(arrays, images=images).items():
        np.testing.assert_array_equal(decoded[name], value, err_msg=name)


def test_manifest_of_an_unknown_shard_format_is_refused(tmp_path):
    write_dataset(make_frames(), tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["shard_format"] == shards.SHARD_FORMAT
    data["shard_format"] = "parquet-v9"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ShardError, match="shard_format 'parquet-v9' is not supported"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("codec", [XZ, ZSTD], ids=lambda c: c.name)
def test_image_streams_that_disagree_are_a_corrupt_shard(codec):
    images = np.zeros((2, 16, 16), np.uint8)
    images[:, 3, 4] = 200
    stored = shards.encode_images(images, codec)
    values = "images_values" + codec.suffix
    stored[values] = shards.encode_images(images[:1], codec)[values]
    with pytest.raises(ShardCorruptError, match="shard y: image mask has 2 lit pixels but 1 values"):
        shards.decode_images(stored, "shard y")
    stored = shards.encode_images(images, codec)
    stored["images_shape"] = np.array([3, 16, 16])
    with pytest.raises(ShardCorruptError, match="shard y: image mask holds"):
        shards.decode_images(stored, "shard y")


KILLED_WRITER = r"""
import os, signal, sys
import numpy as np
from signpose import shards, store
from signpose.io import KeypointFrames
from signpose.render import RenderSettings

frames_path, uri, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
with np.load(frames_path, allow_pickle=False) as f:
    frames = KeypointFrames(f["keypoints"], f["split"], f["video_id"], f["frame_index"], "killed-writer")
done = []

def die_on_shard(key):
    if key.endswith(".npz"):
        if len(done) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no exception handlers, no clean-up: a hard crash
        done.append(key)

if uri.startswith("s3://"):
    original = store.S3Store.put_bytes
    def put_bytes(self, key, data):
        die_on_shard(key)
        return original(self, key, data)
    store.S3Store.put_bytes = put_bytes
else:
    # Die after the temporary file is complete but before the rename that publishes it.
    real_replace = os.replace
    def replace(src, dst):
        die_on_shard(str(dst))
        return real_replace(src, dst)
    store.os.replace = replace
shards.write_dataset(frames, uri, RenderSettings(image_size=48), shard_size=8, workers=1, progress=False)
"""


def test_writer_killed_mid_run_resumes_byte_identical(store_uri, tmp_path, monkeypatch):
    import subprocess
    import sys

    frames = make_frames()
    frames_path = tmp_path / "frames.npz"
    np.savez(frames_path, keypoints=frames.keypoints, split=frames.split, video_id=frames.video_id,
             frame_index=frames.frame_index)
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(frames_path), store_uri, "3"],
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    with pytest.raises(ManifestNotFoundError):
        read_manifest(store_uri)
    store = open_store(store_uri)
    survivors = [k for k in store.list(shards.SHARD_DIR + "/") if k.endswith(".npz")]
    assert len(survivors) == 3

    original = type(store).put_bytes
    rewritten = []
    monkeypatch.setattr(type(store), "put_bytes", lambda self, key, data: (
        rewritten.append(key) if key.endswith(".npz") else None, original(self, key, data)))
    resumed = write_dataset(frames, store_uri, SETTINGS, shard_size=8, workers=1, progress=False)
    monkeypatch.undo()
    assert sorted(rewritten) == sorted(set(s.key for s in resumed.shards) - set(survivors))
    clean = write_dataset(frames, tmp_path / "clean", SETTINGS, shard_size=8, workers=1, progress=False)
    assert resumed.shards == clean.shards
    assert shard_bytes(store_uri, resumed) == shard_bytes(tmp_path / "clean", clean)


def test_shard_index_ranges_cover_all_shards_in_near_equal_parts():
    assert shards.shard_index_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert shards.shard_index_ranges(2, 5) == [(0, 1), (1, 2)]
    assert shards.shard_index_ranges(0, 4) == []


def test_prepared_fan_out_writes_in_parallel_tasks_then_merges(tmp_path):
    frames = make_frames()
    uri = str(tmp_path / "fan")
    plan, ranges = shards.prepare_fan_out(frames, uri, SETTINGS, shard_size=8, n_tasks=3)
    assert len(ranges) == 3 and ranges[0][0] == 0 and ranges[-1][1] == plan.n_shards
    for start, stop in reversed(ranges):  # tasks finish in any order
        write_shard_range(frames, uri, SETTINGS, range(start, stop), shard_size=8, workers=1, progress=False)
    merged = merge_manifest(uri, plan.dataset_hash)
    assert merged.dataset_hash == plan.dataset_hash and merged.n_frames == 37
    again, no_ranges = shards.prepare_fan_out(frames, uri, SETTINGS, shard_size=8, n_tasks=3)
    assert no_ranges == [] and again == plan


def test_empty_input_is_refused(tmp_path):
    frames = make_frames()
    with pytest.raises(ValueError, match="no frames"):
        write_dataset(frames.subset(np.zeros(len(frames), bool)), tmp_path, SETTINGS, progress=False)


def test_rerun_repairs_a_deleted_shard_of_a_committed_data_set(store_uri):
    frames = make_frames()
    manifest = write_dataset(frames, store_uri, SETTINGS, shard_size=8, workers=1, progress=False)
    store = open_store(store_uri)
    lost = manifest.shards[4]
    original = store.get_bytes(lost.key)
    store.delete(lost.key)
    with pytest.raises(ShardError, match=lost.key):
        shards.verify_dataset(store_uri, progress=False)
    repaired = write_dataset(frames, store_uri, SETTINGS, shard_size=8, workers=1, progress=False)
    assert repaired.shards == manifest.shards
    assert store.get_bytes(lost.key) == original
    assert shards.verify_dataset(store_uri, progress=False).dataset_hash == manifest.dataset_hash


def test_dataset_cli_reports_and_verifies(tmp_path, capsys):
    import argparse

    from signpose.cli.dataset import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    manifest = write_dataset(make_frames(), tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    args = parser.parse_args(["dataset", "info", str(tmp_path)])
    assert args.func(args) == 0 and manifest.dataset_hash in capsys.readouterr().out
    args = parser.parse_args(["dataset", "verify", str(tmp_path / MANIFEST_NAME)])
    assert args.func(args) == 0 and "all 6 shards verified" in capsys.readouterr().out
    victim = tmp_path / manifest.shards[0].key
    victim.write_bytes(victim.read_bytes()[:-1] + b"?")
    assert args.func(args) == 1 and manifest.shards[0].key in capsys.readouterr().err


def test_packed_images_decode_frame_by_frame_like_the_whole_stack(tmp_path):
    manifest = write_dataset(make_frames(), tmp_path, SETTINGS, shard_size=8, workers=1, progress=False)
    full = read_shard(tmp_path, manifest.shards[0])["images"]
    packed = read_shard(tmp_path, manifest.shards[0], packed_images=True)["images"]
    assert isinstance(packed, shards.PackedImages) and packed.shape == full.shape and len(packed) == 8
    for i in range(len(full)):
        np.testing.assert_array_equal(packed[i], full[i])
    np.testing.assert_array_equal(packed[-1], full[-1])
    np.testing.assert_array_equal(np.asarray(packed), full)
    with pytest.raises(IndexError):
        packed[8]


FIXTURES = Path(__file__).resolve().parent / "data"
V2_SHARD = FIXTURES / "shard-npz-v2-6x32.npz"  # written by the v2 writer (git 5a9ea4f) before zstd came


def test_a_v2_shard_written_by_the_xz_writer_still_reads_and_the_kept_xz_encoder_rewrites_it():
    # The fixture: 6 generated frames (signpose.synth seed 3), 32 px, encoded by build_shard at v2;
    # the expected arrays next to it were decoded then (np.savez_compressed of the SHARD_FIELDS).
    blob = V2_SHARD.read_bytes()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        assert list(npz.files) == list(STORED_FIELDS_V2)
    decoded = shards.decode_shard(blob, "v2 fixture")
    with np.load(FIXTURES / "shard-npz-v2-6x32.expected.npz", allow_pickle=False) as expected:
        assert set(decoded) == set(expected.files) == set(shards.SHARD_FIELDS)
        for name in expected.files:
            np.testing.assert_array_equal(decoded[name], expected[name], err_msg=name)
    assert shards.encode_shard(decoded, XZ) == blob  # the xz writer is kept: same bytes as before
    assert SHARD_FORMAT_V2 in READABLE_SHARD_FORMATS


@pytest.mark.parametrize("codec", [XZ, ZSTD, StreamCodec("zstd", 1)], ids=lambda c: f"{c.name}{c.level}")
def test_every_stream_codec_round_trips_a_shard_byte_exact_and_deterministically(codec):
    from signpose.synth import generate_signer_frames

    frames = generate_signer_frames(n_videos=2, frames_per_video=16, seed=1)
    keypoints = frames.keypoints.astype(np.float32)
    images = render_frames(keypoints, SETTINGS)
    keypoints[0, :5] = [np.nan, np.inf, -0.0]  # odd bit patterns survive too
    arrays = {"keypoints": keypoints, "face": np.ascontiguousarray(keypoints[:, layout.FACE]),
              "images": images, "split": frames.split,
              "video_id": frames.video_id, "frame_index": frames.frame_index.astype(np.int64)}
    blob = shards.encode_shard(arrays, codec)
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        assert [name for name in npz.files if name.endswith(("_xz", "_zst"))] == [
            "points" + codec.suffix, "images_mask" + codec.suffix, "images_values" + codec.suffix]
    decoded = shards.decode_shard(blob)
    for name, value in arrays.items():
        assert decoded[name].tobytes() == np.asarray(value).tobytes(), name
    assert shards.encode_shard(arrays, codec) == blob


def test_a_zstd_stream_that_inflates_beyond_the_shard_shape_is_refused_from_its_header():
    import zstandard

    big = np.zeros((20_000, layout.N_POINTS, 3), np.float32)  # 51 MB of points, a few KB of zstd
    stream = shards.encode_points(big, big[:, layout.FACE], ZSTD)
    decompress = zstandard.ZstdDecompressor.decompress
    with pytest.MonkeyPatch.context() as patch:  # refused before any output buffer exists
        patch.setattr(zstandard.ZstdDecompressor, "decompress", lambda *a, **k: pytest.fail("decompressed"))
        with pytest.raises(ShardCorruptError, match="'points_zst' would decompress to more than the 7596 bytes"):
            shards.decode_points(stream, 3, "shard z", ZSTD)
    assert decompress is zstandard.ZstdDecompressor.decompress
    images = shards.encode_images(np.zeros((2000, 64, 64), np.uint8) + 1, ZSTD)
    images["images_shape"] = np.array([1, 64, 64])
    with pytest.raises(ShardCorruptError, match="image streams would decompress to more than"):
        shards.decode_images(images, "shard z")
    # A frame that does not state its size (a streaming writer's) is refused too: nothing to bound by.
    writer = zstandard.ZstdCompressor().compressobj()
    unsized = np.frombuffer(writer.compress(b"\0" * 7596) + writer.flush(), np.uint8)
    with pytest.raises(ShardCorruptError, match="without its content size"):
        shards.decode_points(unsized, 3, "shard z", ZSTD)


def test_damaged_zstd_streams_are_a_corrupt_shard_naming_the_field():
    stream = shards.encode_points(np.ones((3, layout.N_POINTS, 3), np.float32),
                                  np.ones((3, layout.N_FACE, 3), np.float32), ZSTD)
    with pytest.raises(ShardCorruptError, match="shard z: field 'points_zst' holds .* expected .* for 4 frames"):
        shards.decode_points(stream, 4, "shard z", ZSTD)  # decoded size under the bound, but wrong
    for bad in (stream[:-6], np.frombuffer(b"not zstd", np.uint8), stream[:3],
                np.concatenate([stream, stream])):  # truncated, garbage, no header, trailing data
        with pytest.raises(ShardCorruptError, match="shard z: field 'points_zst' cannot be decompressed"):
            shards.decode_points(bad, 3, "shard z", ZSTD)
    flipped = stream.copy()
    flipped[len(flipped) // 2] ^= 0xFF  # caught by the frame's checksum if not before
    with pytest.raises(ShardCorruptError, match="cannot be decompressed"):
        shards.decode_points(flipped, 3, "shard z", ZSTD)
