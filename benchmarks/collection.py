"""Benchmark: where the time of recording a demonstration goes (simulation and control, rendering, encoding).

Run with `python benchmarks/collection.py`. One process, side by side: the same seeds rolled out without
rendering and with the top camera rendered at the recorded frames, then written as a LeRobotDataset.
"""
import argparse
import tempfile
import time
from pathlib import Path

from craft.data import write_dataset
from craft.sim import EPISODE_STEPS, SCRIPTS, TASK_PROMPTS, rollout


def timed(fn, *args):
    "`(result, seconds)` of calling `fn(*args)`."
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def episodes(task: str, n: int, frame_every: int, size: tuple | None) -> list:
    "Seeds 0..n-1 of `task`, rolled out."
    return [rollout(task, seed, frame_every, size) for seed in range(n)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3, help="episodes per task")
    parser.add_argument("--frame-every", type=int, default=5, help="record every n-th control step")
    parser.add_argument("--image-size", type=int, nargs=2, default=[120, 160], help="height width")
    args = parser.parse_args()
    size = tuple(args.image_size)
    print("| task | steps/episode | frames/episode | sim+control s | render s | encode s | frames/s | episodes/min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for task in SCRIPTS:
        _, t_blind = timed(episodes, task, args.episodes, args.frame_every, None)
        eps, t_full = timed(episodes, task, args.episodes, args.frame_every, size)
        with tempfile.TemporaryDirectory() as d:
            _, t_write = timed(write_dataset, Path(d) / task, eps, {"train": len(eps)}, 10, TASK_PROMPTS[task])
        frames = sum(len(e.states) for e in eps)
        total = t_full + t_write
        n = args.episodes
        print(f"| {task} | {EPISODE_STEPS} | {frames // n} | {t_blind / n:.2f} | {(t_full - t_blind) / n:.2f} "
              f"| {t_write / n:.2f} | {frames / total:.1f} | {60 * n / total:.1f} |", flush=True)


if __name__ == "__main__":
    main()
