"""pi0_fast at real size on one GPU: baseline and CRaFT steps (fp32 master weights, bf16 compute), memory, decoding.

    python benchmarks/pi0_fast_gpu.py --prepare .gpu   # here: the insertion frames it reads (no video decoder there)
    python benchmarks/pi0_fast_gpu.py .gpu --ci --device cpu   # rehearsal: CI-sized pi0_fast, same code
    python benchmarks/pi0_fast_gpu.py .gpu             # on the GPU: gemma_2b sizes from initial weights

LeRobot's `PI0FastPolicy` is built offline (initial weights, project-made tokenizers) for data/insertion; task batch 8,
anchor batch 8, K = 5, gradient checkpointing, `train.mixed_precision: bf16`. The anchors' targets are the initial
policy's own features (what its anchor cache would hold), computed in memory. The overhead floor is
1 + t_anchor / (K · t_task), as in `benchmarks/train_step.py`. Prints each number as it is measured and writes them
all to `--out` (JSON).
"""
import argparse
import dataclasses
import json
import math
import platform
import time
from pathlib import Path

import torch
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

from craft.config import CraftConfig, TrainConfig
from craft.frames import decode_frames
from craft.grad_surgery import gradient_stats, surgery_merge_granular_
from craft.loaders import TaskLoader
from craft.policies.pi0_fast.modeling_pi0_fast import CI_SIZE
from craft.policies.pi0_fast.teacher import CI_POLICY, build_teacher, teacher_spec
from craft.retention import anchor_features, hidden_retention_loss
from craft.run import Run
from craft.train import compute_precision, update_step

DATASET = "data/insertion"
FRAMES = "frames.pt"
REAL_POLICY = {"paligemma_variant": "gemma_2b", "dtype": "float32", "gradient_checkpointing": True, "device": "cuda"}
CHUNK = 50                                          # pi0_fast's own chunk size; the CI size takes the first 10 steps


def prepare(folder: Path) -> None:
    "Decode the insertion data's frames at recorded size (pi0_fast resizes them itself) into `folder/frames.pt`."
    folder.mkdir(parents=True, exist_ok=True)
    frames = decode_frames(DATASET, (120, 160), CHUNK)
    keep = frames.rows("train")[:: max(1, len(frames.rows("train")) // 64)][:64]          # 64 frames, 8 batches
    subset = dataclasses.replace(frames, images=frames.images[keep], state=frames.state[keep],
                                 action=frames.action[keep], episode=frames.episode[keep], frame=frames.frame[keep])
    torch.save(subset, folder / FRAMES)
    print(f"{len(keep)} frames → {folder / FRAMES} ({(folder / FRAMES).stat().st_size / 2**20:.1f} MiB)")


class Record(dict):
    "Measured values, printed as they come."

    def __setitem__(self, key, value):
        print(f"{key}: {value}", flush=True)
        super().__setitem__(key, value)


class Anchors:
    "Endless anchor batches (frames with their action prompts) and the initial policy's features of them."

    def __init__(self, policy, frames, craft: CraftConfig, cfg: TrainConfig):
        rows = frames.rows("train")
        self.inputs = [{"images": list(frames.images[rows[i:i + craft.anchor_batch_size]]),
                        "prompts": [policy.action_prompt(frames.task, s)
                                    for s in frames.state[rows[i:i + craft.anchor_batch_size]]]}
                       for i in range(0, len(rows), craft.anchor_batch_size)]
        params = [p for p in policy.parameters()]
        with torch.no_grad(), compute_precision(params, cfg):
            self.targets = [{k: v.float() for k, v in anchor_features(policy, b["images"], b["prompts"], craft).items()}
                            for b in self.inputs]
        self.n = 0

    def __next__(self):
        i, self.n = self.n % len(self.inputs), self.n + 1
        return self.inputs[i], self.targets[i]


def synced(device: str) -> float:
    "The time after the device's queued work has finished."
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def timed_steps(run: Run, first: int, n: int, device: str) -> list[float]:
    "Seconds of each of `n` trainer steps of `run` from step `first`; every step must apply its update."
    times = []
    for step in range(first, first + n):
        batch = next(run.tasks)
        start = synced(device)
        row = update_step(run, batch, step)
        times.append(synced(device) - start)
        assert row["skipped"] == 0, f"step {step} was skipped: {row}"
    return times


def peak_gib(device: str) -> float:
    "Peak memory allocated on the GPU since the last reset, GiB (NaN on the CPU)."
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else math.nan


def device_mallocs(device: str) -> int:
    "Memory segments the caching allocator has requested from the driver so far (cudaMalloc calls; 0 on the CPU)."
    return torch.cuda.memory_stats().get("segment.all.allocated", 0) if device == "cuda" else 0


def flat_stats_error(grads) -> dict:
    "Relative errors of the surgery's reductions on the flat buffers against a float64 sum in chunks."
    dot, task_sq, ret_sq = gradient_stats([grads.task], [grads.ret])
    exact = torch.zeros(3, dtype=torch.float64, device=grads.task.device)
    for t, r in zip(grads.task.split(1 << 26), grads.ret.split(1 << 26)):
        t, r = t.double(), r.double()
        exact += torch.stack([t @ r, t @ t, r @ r])
    e_dot, e_task, e_ret = exact.tolist()
    return {"dot_over_norms": abs(dot - e_dot) / (e_task * e_ret) ** 0.5, "task_sq": abs(task_sq - e_task) / e_task,
            "ret_sq": abs(ret_sq - e_ret) / e_ret}


def profile_step(run: Run, batch: dict, step: int, device: str, path: Path) -> None:
    "One trainer step under torch.profiler: the operators by device time and by host time, into `path`."
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        update_step(run, batch, step)
        synced(device)
    table = prof.key_averages()
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    path.write_text(table.table(sort_by=sort, row_limit=25) + "\n\n"
                    + table.table(sort_by="self_cpu_time_total", row_limit=25))


def reset_peak(device: str) -> None:
    "Start a new peak-memory window."
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def measure(folder: Path, ci: bool, device: str, out: Path) -> Record:
    "Every number of the check, into `out` as it goes."
    began = time.perf_counter()
    rec = Record(host=platform.node(), torch=torch.__version__,
                 gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
    section = {**(CI_POLICY if ci else REAL_POLICY), "device": device}
    spec, size = teacher_spec({"pretrained": "", "text_tokenizer": "", "action_tokenizer": "",
                               "size": dataclasses.asdict(CI_SIZE) if ci else {}})
    start = synced(device)
    policy = build_teacher(spec, size, section, DATASET)
    rec["build_seconds"] = round(synced(device) - start, 1)
    params = [p for p in policy.parameters() if p.requires_grad]
    rec["parameters"] = sum(p.numel() for p in params)
    rec["weight_dtypes"] = sorted({str(p.dtype) for p in params})
    frames = torch.load(folder / FRAMES, weights_only=False)
    frames = dataclasses.replace(frames, action=frames.action[:, :policy.config.chunk_size])
    cfg = TrainConfig(steps=1000, batch_size=8, lr=2.5e-5, warmup_steps=10, mixed_precision="bf16")
    craft = CraftConfig(enabled=True, anchor_cache_dir="(in memory)", anchor_batch_size=8, retention_freq=5)
    k = craft.retention_freq
    anchors = Anchors(policy, frames, craft, cfg)
    with torch.no_grad():
        batch = anchors.inputs[0]
        fp32 = anchor_features(policy, batch["images"], batch["prompts"], craft)
        rec["retention_loss_of_bf16_compute_against_fp32_targets"] = float(
            hidden_retention_loss(fp32, anchors.targets[0], craft.retention_loss))
        rec["mean_square_of_fp32_targets"] = float(sum(v.float().pow(2).mean() for v in fp32.values()) / len(fp32))
    out.write_text(json.dumps(rec, indent=2))

    tasks = TaskLoader(frames, cfg.batch_size, 0)
    base_run = Run.start(policy, cfg, dataclasses.replace(craft, enabled=False), tasks)
    timed_steps(base_run, 1, 2, device)                                                    # warm-up
    reset_peak(device)
    base = timed_steps(base_run, 3, 2 * k, device)
    rec["baseline_step_seconds"] = [round(t, 4) for t in base]
    rec["baseline_peak_gib"] = round(peak_gib(device), 2)
    with torch.no_grad(), compute_precision(params, cfg):
        units = policy.task_loss(next(tasks))[1]
    rec["action_tokens_per_batch"] = units
    out.write_text(json.dumps(rec, indent=2))

    base_run.grads = None                                     # free the baseline's gradient buffer before CRaFT's peak
    run = Run(policy, base_run.optimizer, base_run.scheduler, cfg, craft, tasks, anchors)
    timed_steps(run, k, 1, device)                                                         # warm-up: a retention step
    reset_peak(device)
    mallocs = device_mallocs(device)
    steps = timed_steps(run, k + 1, 2 * k, device)
    rec["craft_step_seconds"] = [round(t, 4) for t in steps]
    rec["craft_peak_gib"] = round(peak_gib(device), 2)
    rec["device_mallocs_during_craft_steps"] = device_mallocs(device) - mallocs
    profile_step(run, next(tasks), 4 * k, device, out.with_name(out.stem + "_retention_step_profile.txt"))
    anchor_times, surgery_times, grads = [], [], run.grads
    for _ in range(3):
        inputs, targets = next(anchors)
        start = synced(device)
        with compute_precision(params, cfg):
            loss = hidden_retention_loss(anchor_features(policy, inputs["images"], inputs["prompts"], craft), targets,
                                         craft.retention_loss)
        with grads.retention():                                   # the trainer's buffers, as in a retention step
            loss.backward()
        anchor_times.append(synced(device) - start)
        grads.zero_task_()
        with compute_precision(params, cfg):
            task = policy.task_loss(next(tasks))[0]
        task.backward()
        start = synced(device)
        surgery_merge_granular_(grads, 1.0, craft.projection_mode, craft.conflict_threshold, craft.use_grad_projection)
        surgery_times.append(synced(device) - start)
    rec["flat_stats_error"] = flat_stats_error(grads)
    t_task, t_craft = sorted(base)[len(base) // 2], sum(steps) / len(steps)
    t_anchor, t_surgery = min(anchor_times), min(surgery_times)
    floor = 1 + t_anchor / (k * t_task)
    rec.update(anchor_pass_seconds=round(t_anchor, 4), surgery_seconds=round(t_surgery, 4),
               overhead_ratio=round(t_craft / t_task, 4), overhead_floor=round(floor, 4),
               ratio_over_floor=round(t_craft / t_task / floor, 4),
               samples_per_second=round(cfg.batch_size / t_task, 2),
               action_tokens_per_second=round(units / t_task, 1))
    out.write_text(json.dumps(rec, indent=2))

    policy.eval()
    for n in (1, 8):                    # LeRobot's KV-cached generation to the budget (0.4.4 has no end-of-action stop)
        batch = policy.preprocess(frames.batch(frames.rows("train")[:n]))
        images, img_masks = policy._preprocess_images(batch)
        prefix = (images, img_masks, batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK])
        with torch.no_grad(), compute_precision(params, cfg):
            policy.model.sample_actions_fast_kv_cache(*prefix, max_decoding_steps=8)              # warm-up
            start = synced(device)
            tokens = policy.model.sample_actions_fast_kv_cache(*prefix,
                                                               max_decoding_steps=policy.config.max_decoding_steps)
        seconds = synced(device) - start
        rec[f"decode_batch{n}"] = {"seconds": round(seconds, 3), "tokens_shape": list(tokens.shape),
                                   "generated_tokens_per_second": round(tokens.numel() / seconds, 1)}
    rec["total_seconds"] = round(time.perf_counter() - began, 1)
    out.write_text(json.dumps(rec, indent=2))
    return rec


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where --prepare wrote the frames")
    parser.add_argument("--prepare", action="store_true", help="decode the frames into FOLDER (here, once)")
    parser.add_argument("--ci", action="store_true", help="CI-sized pi0_fast (a rehearsal)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a rehearsal")
    parser.add_argument("--out", type=Path, default=Path("pi0_fast_gpu.json"), help="where the numbers go")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.folder)
    else:
        measure(args.folder, args.ci, args.device, args.out)
