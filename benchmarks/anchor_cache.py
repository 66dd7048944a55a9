"""Anchor-cache build throughput against the teacher's forward-only throughput on the same batches; bytes per anchor.

Run from the repository root after `make repro` (it uses models/teacher and data/insertion):
    python benchmarks/anchor_cache.py
"""
import tempfile
import time
from pathlib import Path

import torch

from craft.anchor_cache import CacheConfig, build_anchor_cache, cache_bytes, draw_anchors
from craft.config import CraftConfig
from craft.frames import decode_frames
from craft.policies.small_vla.modeling_small_vla import SmallVLAPolicy
from craft.project import find_root


def forward_only(policy, frames, rows, batch_size: int, layers: list[int]) -> float:
    "Seconds for the teacher's hidden-state forwards over `rows`, batch by batch, nothing kept."
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(rows), batch_size):
            batch = rows[first:first + batch_size]
            prompts = [policy.action_prompt(frames.task, frames.state[r]) for r in batch]
            policy.hidden_states([frames.images[r] for r in batch], prompts, layers)
    return time.perf_counter() - start


def main(anchors: int = 512, batch_size: int = 64, repeats: int = 3):
    torch.set_num_threads(2)
    root = find_root()
    teacher_dir = root / "models" / "teacher"
    policy = SmallVLAPolicy.from_pretrained(teacher_dir)
    frames = decode_frames(root / "data" / "insertion", policy.config.vla.image_size, policy.config.chunk_size,
                           progress=False)
    cfg = CacheConfig(num_anchors=anchors, batch_size=batch_size)
    hidden, token = CraftConfig(), CraftConfig(retention_mode="token")
    rows = draw_anchors(frames, cfg.split, cfg.num_anchors, cfg.seed)
    with tempfile.TemporaryDirectory() as d:
        fwd, build = [], []
        for _ in range(repeats):                  # interleaved, fastest of each: this machine is noisy
            fwd.append(forward_only(policy, frames, rows, batch_size, list(hidden.retention_layers)))
            start = time.perf_counter()
            build_anchor_cache(policy, teacher_dir, frames, "data/insertion", hidden, cfg, Path(d) / "h",
                               progress=False)
            build.append(time.perf_counter() - start)
        build_anchor_cache(policy, teacher_dir, frames, "data/insertion", token, cfg, Path(d) / "t", progress=False)
        h, t = cache_bytes(Path(d) / "h"), cache_bytes(Path(d) / "t")
    width, feats = policy.config.vla.width, len(hidden.retention_layers) * len(hidden.retention_pools)
    print(f"anchors {anchors}, batch {batch_size}, width {width}, {feats} features (layers × poolings)")
    print(f"forward only: {anchors / min(fwd):.1f} anchors/s; build: {anchors / min(build):.1f} anchors/s; "
          f"ratio {min(fwd) / min(build):.2f}")
    print(f"hidden cache: {h['targets'] / anchors:.0f} B/anchor of targets (expected {feats * width * 2}), "
          f"{h['references'] / anchors:.0f} B/anchor of references")
    print(f"token cache: {t['targets'] / anchors:.0f} B/anchor of targets; hidden ÷ token = "
          f"{h['targets'] / t['targets']:.2f}")
    print(f"pi0_fast (width 2048), same layers and poolings, 1000 anchors: {feats * 2048 * 2 * 1000 / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
