"""CRaFT's step-time overhead over the baseline, side by side on the default model, against its floor.

Run from the repository root after `make repro` (it uses models/teacher, cache/anchors and data/insertion):
    python benchmarks/train_step.py
The floor is 1 + t_anchor / (K · t_task): what the anchor pass alone must add every K steps.
`benchmarks/pi0_fast_step.py` measures the same on LeRobot's pi0_fast with `overhead` below.
"""
import dataclasses
import time

import torch
import yaml

from craft.anchor_cache import AnchorCacheDataset, AnchorLoader
from craft.config import CraftConfig, TrainConfig, from_section
from craft.frames import decode_datasets
from craft.grad_surgery import surgery_merge_granular_
from craft.loaders import TaskLoader
from craft.policy import load_policy
from craft.primal_dual import PrimalDual
from craft.project import find_root
from craft.run import Run
from craft.train import retention_loss, update_step


def overhead(teacher, dataset: str, frames, cache, craft: CraftConfig, cfg: TrainConfig, rounds: int = 6) -> dict:
    "Seconds per step of baseline and CRaFT (alternating rounds of K steps), of the anchor pass and of the surgery."
    policies = {name: load_policy(teacher) for name in ("baseline", "craft")}
    runs = {}
    for name, policy in policies.items():
        runs[name] = Run.start(policy, dataclasses.replace(cfg, steps=10_000),
                               dataclasses.replace(craft, enabled=name == "craft"),
                               TaskLoader(frames[dataset], cfg.batch_size, 0),
                               AnchorLoader(cache, frames, craft.anchor_batch_size, 0))
    k, step, totals = craft.retention_freq, {"baseline": 0, "craft": 0}, {"baseline": [], "craft": []}
    for r in range(rounds + 1):                      # round 0 warms up; rounds alternate the two methods
        for name in ("baseline", "craft") if r % 2 else ("craft", "baseline"):
            batches = [next(runs[name].tasks) for _ in range(k)]
            start = time.perf_counter()
            for b in batches:
                step[name] += 1
                update_step(runs[name], b, step[name])
            if r:
                totals[name].append((time.perf_counter() - start) / k)
    run = runs["craft"]
    policy, tasks, anchors, grads = run.policy, run.tasks, run.anchors, run.grads
    params_ = [p for p in policy.parameters() if p.requires_grad]
    anchor_times, surgery_times = [], []
    for _ in range(rounds):
        inputs, targets = next(anchors)
        start = time.perf_counter()
        loss, _ = retention_loss(policy, inputs, targets, craft)
        with grads.retention():                            # the trainer's buffers, as in a retention step
            loss.backward()
        anchor_times.append(time.perf_counter() - start)
        grads.zero_task_()
        policy.task_loss(next(tasks))[0].backward()       # the task buffer holds a real task gradient
        dual = PrimalDual(craft, 10_000)
        start = time.perf_counter()
        surgery_merge_granular_(grads, dual.lam, craft.projection_mode, craft.conflict_threshold,
                                craft.use_grad_projection, craft.surgery_granularity)
        dual.update(1, loss.item())
        surgery_times.append(time.perf_counter() - start)
    return {"k": k, "parameters": sum(p.numel() for p in params_), "task": min(totals["baseline"]),
            "craft": min(totals["craft"]), "anchor": min(anchor_times), "surgery": min(surgery_times)}


def report(t: dict, cfg: TrainConfig, craft: CraftConfig) -> None:
    "Print the measured times, the overhead ratio and its floor."
    k, floor = t["k"], 1 + t["anchor"] / (t["k"] * t["task"])
    print(f"K = {k}, task batch {cfg.batch_size}, anchor batch {craft.anchor_batch_size}, "
          f"{t['parameters'] / 1e6:.2f} M parameters")
    print(f"baseline step {t['task'] * 1e3:.1f} ms; CRaFT step (mean over K) {t['craft'] * 1e3:.1f} ms; "
          f"anchor pass {t['anchor'] * 1e3:.1f} ms; surgery + merge + dual {t['surgery'] * 1e3:.2f} ms")
    print(f"overhead ratio {t['craft'] / t['task']:.3f}, floor {floor:.3f}, "
          f"ratio ÷ floor {t['craft'] / t['task'] / floor:.3f}")
    print(f"surgery + merge + dual = {100 * t['surgery'] / (k * t['craft']):.2f}% of a CRaFT step's share "
          f"(per K steps), {100 * t['surgery'] / (t['task'] + t['anchor'] + t['surgery']):.2f}% of a retention step")


def main():
    torch.set_num_threads(2)
    root = find_root()
    params = yaml.safe_load((root / "params.yaml").read_text())
    craft = from_section(CraftConfig, {**params["craft"], "enabled": True}, "craft")
    cfg = from_section(TrainConfig, params["train"], "train")
    teacher = root / "models" / "teacher"
    policy = load_policy(teacher)
    frames = decode_datasets(root, ["data/insertion"], policy.frame_size, policy.config.chunk_size)
    cache = AnchorCacheDataset(root / craft.anchor_cache_dir, teacher, craft, policy.feature_width)
    report(overhead(teacher, "data/insertion", frames, cache, craft, cfg), cfg, craft)


if __name__ == "__main__":
    main()
