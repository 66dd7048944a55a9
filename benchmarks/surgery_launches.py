"""The surgery's reductions and finiteness check at pi0_fast's real shapes: launches and time beside an old commit.

    python benchmarks/surgery_launches.py                  # against ce808a0 (blocks of 2^18, a sync per tensor)
    python benchmarks/surgery_launches.py --ref COMMIT

The old code reduces the per-parameter gradient lists; the trainer now holds each gradient in one flat buffer
(`FlatGrads`), which the current code reduces. Launches are counted at gemma_2b's 603 parameter shapes on the meta
device (every non-view ATen operation, and the host syncs, `.item()`/`bool()`/`.tolist()`); times are measured on
the CPU at the gemma_300m variant's shapes (the 2.9 B model's two float32 gradients do not fit in this machine's
memory), min of 3 runs, both versions on the same values.
"""
import argparse
import ast
import subprocess
import time
from collections import Counter

import torch
from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
from lerobot.datasets.utils import dataset_to_policy_features
from lerobot.policies.pi0_fast import modeling_pi0_fast
from torch.utils._python_dispatch import TorchDispatchMode

from craft.grad_surgery import _BLOCK, gradient_stats
from craft.policies.pi0_fast.compat import ensure_siglip_check
from craft.policies.pi0_fast.modeling_pi0_fast import Pi0FastSize, building
from craft.policies.pi0_fast.teacher import teacher_config
from craft.train import _finite


def shapes(variant: str) -> list[torch.Size]:
    "The trainable parameter shapes of LeRobot's pi0_fast `variant` (built on the meta device)."
    ensure_siglip_check()
    meta = LeRobotDatasetMetadata("insertion", root="data/insertion")
    config = teacher_config({"paligemma_variant": variant, "device": "cpu"}, dataset_to_policy_features(meta.features))
    with building(config, Pi0FastSize()), torch.device("meta"):
        model = modeling_pi0_fast.PI0FastPytorch(config)
    return [p.shape for p in model.parameters() if p.requires_grad]


def reference(ref: str, path: str, names: set[str]) -> dict:
    "The functions and constants `names` of `path` at commit `ref`, run apart: the code before the change."
    source = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True, check=True).stdout
    keep = [n for n in ast.parse(source).body
            if getattr(n, "name", None) in names
            or (isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) in names)]
    space = {"torch": torch, "Tensor": torch.Tensor, "Grads": list}
    exec(compile(ast.Module(keep, type_ignores=[]), f"{ref}:{path}", "exec"), space)
    return space


class Launches(TorchDispatchMode):
    "Counts non-view ATen operations and host syncs; a sync on the meta device reads 1."

    def __init__(self):
        super().__init__()
        self.ops, self.syncs = Counter(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.syncs += 1
            return 1
        if func is torch.ops.aten._to_copy.default and args[0].is_meta and kwargs.get("device") == torch.device("cpu"):
            self.syncs += 1                                      # `.tolist()`: the values come to the host
            return torch.ones(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        if not func.is_view:
            self.ops[func.__name__] += 1
        return func(*args, **(kwargs or {}))


def count(fn, grads) -> Launches:
    "What `fn(*grads)` launches."
    with Launches() as launches:
        fn(*grads)
    return launches


def best_time(fn, args, repeats: int = 3) -> float:
    "Fastest of `repeats` runs, seconds."
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    "The tensors in one buffer padded to whole blocks, as `FlatGrads` holds them."
    n = sum(t.numel() for t in tensors)
    buffer = torch.zeros(-(-n // _BLOCK) * _BLOCK, device=tensors[0].device)
    if buffer.device.type != "meta":
        buffer[:n] = torch.cat([t.reshape(-1) for t in tensors])
    return buffer


def flat_stats(task: torch.Tensor, ret: torch.Tensor) -> tuple[float, float, float]:
    "The surgery's reductions on the two flat buffers."
    return gradient_stats([task], [ret])


def main(ref: str) -> None:
    old_stats = reference(ref, "craft/grad_surgery.py", {"_BLOCK", "_blocks", "_sum64", "gradient_stats"})
    old_finite = reference(ref, "craft/train.py", {"_finite"})["_finite"]
    versions = {f"{ref} (before)": (old_stats["gradient_stats"], old_finite, list), "now": (flat_stats, _finite, flat)}
    real = shapes("gemma_2b")
    meta = [torch.empty(s, device="meta") for s in real]
    print(f"gemma_2b: {len(real)} tensors, {sum(s.numel() for s in real) / 1e9:.3f} B elements")
    for name, (stats, finite, layout) in versions.items():
        s, f = count(stats, (layout(meta), layout(meta))), count(finite, (layout(meta),))
        print(f"  {name:>18}: surgery reductions {sum(s.ops.values()):6d} launches, {s.syncs} syncs; "
              f"finiteness check {sum(f.ops.values()):5d} launches, {f.syncs} syncs")
    small = shapes("gemma_300m")
    gen = torch.Generator().manual_seed(0)
    task, ret = ([torch.randn(s, generator=gen) for s in small] for _ in range(2))
    print(f"gemma_300m on the CPU ({torch.get_num_threads()} threads): {len(small)} tensors, "
          f"{sum(s.numel() for s in small) / 1e9:.3f} B elements")
    results = {}
    for name, (stats, finite, layout) in versions.items():
        t, r = layout(task), layout(ret)
        results[name] = (stats(t, r), best_time(stats, (t, r)), best_time(finite, (t,)))
        del t, r
    for name, (values, t_stats, t_finite) in results.items():
        print(f"  {name:>18}: reductions {t_stats:.3f} s, finiteness {t_finite:.3f} s; "
              f"dot {values[0]:.6e}, |task|² {values[1]:.6e}, |ret|² {values[2]:.6e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="ce808a0", help="the commit whose code is compared")
    main(parser.parse_args().ref)
