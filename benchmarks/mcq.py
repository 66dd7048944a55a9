"""MCQ scoring throughput: choices packed after one shared prefix per question, against a naive scorer that runs
one full forward per (question, choice), side by side on the same held-out questions.

Run from the repository root after `make repro` (it uses models/teacher and the shipped data):
    python benchmarks/mcq.py
"""
import time

import numpy as np
import torch

from craft.data import dataset_roots, load_mcq
from craft.frames import decode_datasets
from craft.mcq import choice_scores
from craft.policies.small_vla.modeling_small_vla import SmallVLAPolicy
from craft.project import find_root


def main(questions: int = 300, rounds: int = 3):
    torch.set_num_threads(2)
    root = find_root()
    policy = SmallVLAPolicy.from_pretrained(root / "models" / "teacher")
    records = load_mcq(root / "data" / "mcq" / "test.jsonl", root)[:questions]
    frames = decode_datasets(root, sorted(dataset_roots(records)), policy.config.vla.image_size,
                             policy.config.chunk_size)
    images = [frames.image(r.image) for r in records]
    times = {"packed": [], "naive": []}
    for r in range(rounds):                            # alternate, fastest of each: this machine is noisy
        for naive in (False, True) if r % 2 == 0 else (True, False):
            start = time.perf_counter()
            scores = choice_scores(policy, records, images, batch_size=16 if not naive else 64, naive=naive)
            times["naive" if naive else "packed"].append(time.perf_counter() - start)
            if naive:
                naive_scores = scores
            else:
                packed_scores = scores
    gap = max(np.abs(a - b).max() for a, b in zip(packed_scores, naive_scores))
    choices = sum(len(r.choices) for r in records)
    packed, naive = min(times["packed"]), min(times["naive"])
    print(f"{len(records)} questions, {choices} choices; packed {len(records) / packed:.1f} questions/s, "
          f"naive {len(records) / naive:.1f} questions/s; speed-up {naive / packed:.2f}×; "
          f"largest score difference {gap:.2e}")


if __name__ == "__main__":
    main()
