"""Cost of skeleton augmentation (affine jitter + re-rendering the target) per frame, next to the cost
of one training step, in CPU time of this process (time.process_time, one torch thread).

    .venv/bin/python bench/augment_cost.py [--frames 960] [--steps 3] [--quick]

Prints one line per image size (augment + render, ms per frame) and one per model configuration (ms
per optimiser step of 16 frames at 64 px): the README configuration and the seed's sizes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from signpose.augment import SampleAugmenter, SkeletonAugmentConfig
from signpose.models import build_model
from signpose.render import RenderSettings
from signpose.synth import generate_signer_frames
from signpose.tasks import SkeletonTrainConfig

README = dict(d_model=96, n_layers=3, n_heads=4, decoder_channels=96, dropout=0.0)


def augment_ms(keypoints: np.ndarray, size: int) -> float:
    augmenter = SampleAugmenter("skeleton", SkeletonAugmentConfig(augment_prob=1.0), RenderSettings(image_size=size))
    rng = np.random.default_rng(0)
    samples = [(torch.from_numpy(k), None) for k in keypoints]
    start = time.process_time()
    for sample in samples:
        augmenter(sample, rng)
    return (time.process_time() - start) / len(samples) * 1e3


def step_ms(keypoints: np.ndarray, steps: int, **model) -> float:
    cfg = SkeletonTrainConfig(image_size=64, **model)
    net = build_model(cfg)
    optimiser = torch.optim.AdamW(net.parameters(), 1e-4)
    x, y = torch.from_numpy(keypoints[:16]), torch.rand(16, 1, 64, 64)
    for i in range(steps + 1):
        if i == 1:  # the first step warms up
            start = time.process_time()
        loss = (net(x) - y).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (time.process_time() - start) / steps * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=960)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    frames = 32 if args.quick else args.frames
    keypoints = generate_signer_frames(max(1, frames // 48) + 1, 48, seed=0).keypoints[:frames]
    for size in (64, 256):
        print(f"augment + render {size}px: {augment_ms(keypoints, size):.3f} ms CPU per frame")
    configs = {"README configuration": README} if args.quick else {"README configuration": README, "seed sizes": {}}
    for name, model in configs.items():
        print(f"training step, {name}, 64px, batch 16: {step_ms(keypoints, 1 if args.quick else args.steps, **model):.0f} "
              "ms CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
