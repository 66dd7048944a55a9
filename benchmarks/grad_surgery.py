"""Benchmark: in-place gradient surgery + merge against a naive PCGrad-port implementation and a copy roofline.

Run with `make bench` (or `python benchmarks/grad_surgery.py --sizes 10e6 100e6`). Every figure is measured in
this one run, side by side, so the ratios hold on a noisy machine. Memory is measured per implementation in a
fresh subprocess as the rise of the peak resident set size (VmHWM, reset just before the call).
"""
import argparse
import json
import subprocess
import sys
import time

import torch

from craft.grad_surgery import surgery_merge_

LAMBDA, THRESHOLD = 1.0, -0.1


def transformer_shapes(total: int) -> list[tuple[int, ...]]:
    "Parameter shapes of a decoder-only transformer (embedding, attention, gated MLP, norms) of ~`total` elements."
    width = 256 if total <= 20_000_000 else 768
    shapes: list[tuple[int, ...]] = [(8192, width)]
    layer = [(width,), (3 * width, width), (width, width), (width,), (4 * width, width), (4 * width, width),
             (width, 4 * width)]
    while sum(torch.Size(s).numel() for s in shapes) < total:
        shapes += layer
    return [*shapes, (width,)]


def make_grads(shapes, seed: int = 0):
    "Parameters whose .grad is a task gradient, and a retention gradient that conflicts with it (cos ≈ -0.45)."
    gen = torch.Generator().manual_seed(seed)
    params, g_ret = [], []
    for s in shapes:
        p = torch.nn.Parameter(torch.empty(s))
        p.grad = torch.randn(s, generator=gen)
        params.append(p)
        g_ret.append(torch.randn(s, generator=gen).add_(p.grad, alpha=-0.5))
    return params, g_ret


def naive_surgery_merge(params, g_ret, lam: float, threshold: float) -> None:
    "Flatten, project, merge, unflatten: per-parameter Python in the style of the public PCGrad ports."
    task = torch.cat([p.grad.flatten() for p in params])
    ret = torch.cat([g.flatten() for g in g_ret])
    dot = torch.dot(task, ret)
    if dot / (task.norm() * ret.norm()) < threshold:
        task = task - dot / ret.norm() ** 2 * ret
    merged = task + lam * ret
    idx = 0
    for p in params:
        p.grad = merged[idx:idx + p.numel()].view_as(p).clone()
        idx += p.numel()


def ours(params, g_ret) -> None:
    "The craft in-place path on per-parameter lists (weighted mode, projection on)."
    surgery_merge_([p.grad for p in params], g_ret, LAMBDA, "weighted", THRESHOLD, True)


def naive(params, g_ret) -> None:
    "The naive path with the same arguments."
    naive_surgery_merge(params, g_ret, LAMBDA, THRESHOLD)


def peak_rss() -> int:
    "This process's peak resident set size since the last `reset_peak_rss`, in bytes (Linux)."
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))


def reset_peak_rss() -> None:
    "Start a new peak-RSS measurement from the current resident set (Linux `clear_refs`)."
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_memory_child(impl: str, total: int) -> None:
    "In a fresh process: print the extra peak memory of one call of `impl`, in units of the gradient size."
    params, g_ret = make_grads(transformer_shapes(total))
    grad_bytes = sum(p.grad.numel() * 4 for p in params)
    reset_peak_rss()
    before = peak_rss()
    {"ours": ours, "naive": naive}[impl](params, g_ret)
    print(json.dumps({"extra_over_grad": (peak_rss() - before) / grad_bytes}))


def extra_memory(impl: str, total: int) -> float:
    "Extra peak memory of `impl`, measured in a fresh subprocess."
    out = subprocess.run([sys.executable, __file__, "--memory-child", impl, "--sizes", str(total)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["extra_over_grad"]


def bench(total: int, repeats: int) -> dict:
    "Every figure for one gradient size."
    shapes = transformer_shapes(total)
    params, g_ret = make_grads(shapes)
    n = sum(p.grad.numel() for p in params)
    originals = [p.grad.clone() for p in params], [g.clone() for g in g_ret]

    def reset():
        for p, t in zip(params, originals[0]):
            p.grad = t.clone()
        for g, r in zip(g_ret, originals[1]):
            g.copy_(r)

    def timed(fn):
        times = []
        for _ in range(repeats):
            reset()
            start = time.perf_counter()
            fn(params, g_ret)
            times.append(time.perf_counter() - start)
        return min(times)

    src, dst = torch.randn(n), torch.empty(n)
    t_copy = timed(lambda *_: dst.copy_(src))     # after the same reset, so no timing starts with a warm cache
    t_ours, t_naive = timed(ours), timed(naive)
    copy_bw = 8 * n / t_copy                      # read n + write n float32
    return {
        "params": n, "tensors": len(shapes), "t_copy_s": t_copy, "t_ours_s": t_ours, "t_naive_s": t_naive,
        "speedup_vs_naive": t_naive / t_ours,
        # bytes actually moved by ours: one reduction pass reads both lists, the merge reads both and writes one
        "moved_bw_vs_copy": (20 * n / t_ours) / copy_bw,
        # the least any implementation must move: read both, write one
        "minimum_bw_vs_copy": (12 * n / t_ours) / copy_bw,
        "extra_mem_ours": extra_memory("ours", total),
        "extra_mem_naive": extra_memory("naive", total),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[10e6, 100e6], help="gradient sizes (elements)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per implementation (fastest kept)")
    parser.add_argument("--memory-child", choices=["ours", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return peak_memory_child(args.memory_child, int(args.sizes[0]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| params | tensors | copy ms | ours ms | naive ms | speed-up | moved B/s ÷ copy | minimum B/s ÷ copy "
          "| extra mem ours | extra mem naive |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for total in args.sizes:
        r = bench(int(total), args.repeats)
        print(f"| {r['params'] / 1e6:.1f}M | {r['tensors']} | {r['t_copy_s'] * 1e3:.1f} | {r['t_ours_s'] * 1e3:.1f} "
              f"| {r['t_naive_s'] * 1e3:.1f} | {r['speedup_vs_naive']:.1f}× | {r['moved_bw_vs_copy']:.2f} "
              f"| {r['minimum_bw_vs_copy']:.2f} | {r['extra_mem_ours']:.2f}× | {r['extra_mem_naive']:.2f}× |",
              flush=True)


if __name__ == "__main__":
    main()
