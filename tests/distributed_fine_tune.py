"""A few CRaFT steps on the tiny pipeline's teacher and cache; run alone, or under `accelerate launch`.

    python tests/distributed_fine_tune.py REPO OUT
    accelerate launch --cpu --num_processes 2 tests/distributed_fine_tune.py REPO OUT
"""
import sys
from pathlib import Path

import torch

from craft.anchor_cache import AnchorCacheDataset, AnchorLoader
from craft.config import CraftConfig, TrainConfig
from craft.distributed import process_shard
from craft.frames import FrameSet, decode_frames
from craft.loaders import TaskLoader
from craft.policies.small_vla.modeling_small_vla import SmallVLAPolicy
from craft.run import Run
from craft.train import fine_tune

repo, out = Path(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(1)
teacher = repo / "models" / "teacher"
shard = process_shard()                                  # the process's device first, then the policy
policy = SmallVLAPolicy.from_pretrained(teacher)
craft = CraftConfig(enabled=True, anchor_cache_dir="cache/anchors", retention_freq=2, lambda_lr=0.5)
frames = FrameSet({"data/insertion": decode_frames(repo / "data" / "insertion", policy.config.vla.image_size,
                                                   policy.config.chunk_size, progress=False)})
cache = AnchorCacheDataset(repo / craft.anchor_cache_dir, teacher, craft, policy.config.vla.width)
cfg = TrainConfig(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, log_freq=1, save_freq=4)
fine_tune(Run.start(policy, cfg, craft, TaskLoader(frames["data/insertion"], cfg.batch_size, cfg.seed, shard),
                    AnchorLoader(cache, frames, 4, cfg.seed, shard)), out, progress=False)
