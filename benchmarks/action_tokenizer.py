"""Benchmark: FAST action tokenizer on the shipped demonstrations (needs `dvc pull data.dvc`).

Fits on the action chunks of the train episodes of both tasks and reports, on the held-out test episodes,
the reconstruction RMSE per action dimension (action units: rad for joints, normalised opening for grippers)
and the tokens per chunk, for a few scales and vocabulary sizes.
"""
import argparse

import numpy as np

from craft.data import STATE_NAMES, load_dataset, split_episodes
from craft.policies.small_vla.tokenizers import FastActionTokenizer
from craft.project import find_root


def chunks(split: str, horizon: int) -> np.ndarray:
    "Every full action chunk (N, horizon, 14) of `split` in both datasets."
    out = []
    for task in ("transfer_cube", "insertion"):
        root = find_root() / "data" / task
        ds = load_dataset(root, split)
        actions = np.asarray(ds.hf_dataset["action"], dtype=np.float64)
        episodes = np.asarray(ds.hf_dataset["episode_index"])
        for ep in split_episodes(root, split):
            a = actions[episodes == ep]
            out += [a[i:i + horizon] for i in range(len(a) - horizon + 1)]
    return np.stack(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=10, help="actions per chunk (10 = 1 s at 10 fps)")
    args = parser.parse_args()
    train, test = chunks("train", args.horizon), chunks("test", args.horizon)
    print(f"{len(train)} train chunks, {len(test)} held-out chunks of {args.horizon} × 14")
    print("| scale | vocab | tokens/chunk (mean, max) | RMSE mean | RMSE max (dimension) |")
    print("|---:|---:|---:|---:|---:|")
    for scale in (10, 50, 100):
        for vocab in (256, 1024):
            tok = FastActionTokenizer(scale, vocab).fit(train)
            ids = [tok.encode(c) for c in test]
            err = np.stack([tok.decode(i) for i in ids]) - test
            rmse = np.sqrt((err ** 2).mean(axis=(0, 1)))
            lengths = [len(i) for i in ids]
            print(f"| {scale} | {len(tok)} | {np.mean(lengths):.1f}, {max(lengths)} | {rmse.mean():.4f} "
                  f"| {rmse.max():.4f} ({STATE_NAMES[rmse.argmax()]}) |", flush=True)


if __name__ == "__main__":
    main()
