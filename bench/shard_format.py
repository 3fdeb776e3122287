"""Measure shard formats: bytes per frame and encode/decode speed (numbers in docs/storage.md).

    .venv/bin/python bench/shard_format.py [--frames 2048] [--image-size 256]

Frames come from the embedded synthetic signer generator (signpose.synth), rendered with the
default RenderSettings (anti-aliased) and with antialias=False. Each variant encodes the same frames
as one shard; sizes are exact, speeds are single-process wall time on this machine.
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile

import numpy as np

from signpose import layout, shards
from signpose.render import RenderSettings, render_frames
from signpose.synth import generate_signer_frames


def npz_plain(arrays) -> bytes:
    """Everything, images included, as ordinary deflated .npz entries (np.savez_compressed)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def parquet(arrays, compression: str, level: int | None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def fixed(name):  # one fixed-size binary value per frame: the row's raw bytes
        rows = arrays[name]
        return pa.array([row.tobytes() for row in rows], pa.binary(rows[0].nbytes))

    table = pa.table({
        "keypoints": fixed("keypoints"),
        "images": fixed("images"),
        "face": fixed("face"),
        "split": pa.array(arrays["split"].tolist()),
        "video_id": pa.array(arrays["video_id"].tolist()),
        "frame_index": pa.array(arrays["frame_index"]),
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=compression, compression_level=level)
    return buffer.getvalue()


def entry_sizes(data: bytes) -> dict[str, int]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: info.compress_size for info in archive.infolist()}


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    per_video = 64
    frames = generate_signer_frames(n_videos=-(-args.frames // per_video), frames_per_video=per_video,
                                    seed=args.seed)
    kp = frames.keypoints[: args.frames]
    n = len(kp)
    missing = float((kp[:, layout.LEFT_HAND, 2] == 0).all(1).mean())
    print(f"{n} synthetic frames, image {args.image_size}x{args.image_size}, "
          f"{missing:.0%} without a left hand")
    for antialias in (True, False):
        settings = RenderSettings(image_size=args.image_size, antialias=antialias)
        images, render_s = timed(render_frames, kp, settings)
        arrays = {"keypoints": kp, "images": images, "face": np.ascontiguousarray(kp[:, layout.FACE]),
                  "split": frames.split[:n].astype(str), "video_id": frames.video_id[:n].astype(str),
                  "frame_index": frames.frame_index[:n]}
        print(f"\nantialias={antialias}: render {n / render_s:,.0f} frames/s, "
              f"{(images > 0).mean():.1%} of pixels lit, raw image {images[0].nbytes:,} B/frame")
        print("| format | total B/frame | images B/frame | encode frames/s | decode frames/s |")
        print("|---|---|---|---|---|")
        ours, enc = timed(shards.encode_shard, arrays)
        decoded, dec = timed(shards.decode_shard, ours)
        assert np.array_equal(decoded["images"], images)
        sizes = entry_sizes(ours)
        img = sum(v for k, v in sizes.items() if k.startswith("images_"))
        print(f"| npz, images mask+values xz (chosen) | {len(ours) / n:,.0f} | {img / n:,.0f} | "
              f"{n / enc:,.0f} | {n / dec:,.0f} |")
        plain, enc = timed(npz_plain, arrays)
        _, dec = timed(lambda b: dict(np.load(io.BytesIO(b), allow_pickle=False)), plain)
        img = entry_sizes(plain)["images.npy"]
        print(f"| npz, all deflate (np.savez_compressed) | {len(plain) / n:,.0f} | {img / n:,.0f} | "
              f"{n / enc:,.0f} | {n / dec:,.0f} |")
        for compression, level in (("snappy", None), ("zstd", 3), ("zstd", 9), ("brotli", 5)):
            import pyarrow.parquet as pq

            blob, enc = timed(parquet, arrays, compression, level)
            _, dec = timed(lambda b: pq.read_table(io.BytesIO(b)), blob)
            meta = pq.ParquetFile(io.BytesIO(blob)).metadata.row_group(0)
            img = next(meta.column(i).total_compressed_size for i in range(meta.num_columns)
                       if meta.column(i).path_in_schema == "images")
            name = f"parquet {compression}" + (f" {level}" if level else "")
            print(f"| {name} | {len(blob) / n:,.0f} | {img / n:,.0f} | {n / enc:,.0f} | {n / dec:,.0f} |")
        print("npz entries (B/frame): " + ", ".join(f"{k[:-4]} {v / n:,.0f}" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
