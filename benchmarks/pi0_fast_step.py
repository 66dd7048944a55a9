"""LeRobot's pi0_fast on the CPU: CRaFT's step-time overhead at CI size against its floor; one gemma_300m step.

    python benchmarks/pi0_fast_step.py               # CI-sized pi0_fast: baseline and CRaFT side by side
    python benchmarks/pi0_fast_step.py --gemma-300m  # the gemma_300m variant at full lengths: time and peak memory

Both build the real `PI0FastPolicy` offline (initial weights, project-made tokenizers) on data/insertion
(`dvc pull data.dvc`). The overhead floor is 1 + t_anchor / (K · t_task), as in `benchmarks/train_step.py`.
"""
import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import torch
from train_step import overhead, report

from craft.anchor_cache import AnchorCacheDataset, CacheConfig, build_anchor_cache
from craft.config import CraftConfig, TrainConfig
from craft.frames import decode_datasets
from craft.policies.pi0_fast.modeling_pi0_fast import CI_SIZE
from craft.policies.pi0_fast.teacher import CI_POLICY, build_teacher, save_teacher, teacher_spec
from craft.policy import load_policy
from craft.project import find_root

DATASET = "data/insertion"


def teacher(root: Path, size: dict, policy: dict):
    "A pi0_fast teacher from initial weights with project-made tokenizers, fitted to the insertion data."
    spec, sizes = teacher_spec({"pretrained": "", "text_tokenizer": "", "action_tokenizer": "", "size": size})
    return build_teacher(spec, sizes, policy, root / DATASET)


def ci_overhead(root: Path):
    "Baseline and CRaFT steps side by side on the CI-sized pi0_fast, with its anchor cache."
    model = save_teacher(teacher(root, dataclasses.asdict(CI_SIZE), CI_POLICY), Path(tempfile.mkdtemp()) / "teacher")
    craft = CraftConfig(enabled=True, anchor_cache_dir=str(model.parent / "anchors"), anchor_batch_size=8)
    policy = load_policy(model)
    frames = decode_datasets(root, [DATASET], policy.frame_size, policy.config.chunk_size)
    build_anchor_cache(policy, model, frames[DATASET], DATASET, craft, CacheConfig(num_anchors=64),
                       craft.anchor_cache_dir, progress=False)
    cache = AnchorCacheDataset(craft.anchor_cache_dir, model, craft, policy.feature_width)
    cfg = TrainConfig(steps=10_000, batch_size=8, lr=2.5e-5, warmup_steps=10)
    report(overhead(model, DATASET, frames, cache, craft, cfg), cfg, craft)


def gemma_300m_step(root: Path):
    "One forward and backward of the gemma_300m variant (LeRobot's real sizes) at full lengths, batch 1."
    start = time.perf_counter()
    policy = teacher(root, {}, {"paligemma_variant": "gemma_300m", "dtype": "float32", "device": "cpu"})
    built = time.perf_counter() - start
    frames = decode_datasets(root, [DATASET], policy.frame_size, policy.config.chunk_size)[DATASET]
    batch = frames.batch(frames.rows("train")[:1])
    policy.train()
    start = time.perf_counter()
    loss, units = policy.task_loss(batch)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    loss.backward()
    backward = time.perf_counter() - start
    print(f"gemma_300m: {sum(p.numel() for p in policy.parameters()) / 1e9:.3f} B parameters; build {built:.1f} s, "
          f"forward {forward:.1f} s, backward {backward:.1f} s ({units} action tokens); "
          f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gemma-300m", action="store_true", help="time one gemma_300m step instead")
    torch.set_num_threads(2)
    (gemma_300m_step if parser.parse_args().gemma_300m else ci_overhead)(find_root())
