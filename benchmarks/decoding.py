"""Decoded-action evaluation: the KV-cached, well-formed greedy decoding against the decoding it replaced.

Run from the repository root after `make repro` (it uses models/teacher and data/transfer_cube):
    python benchmarks/decoding.py [--rows 64]
Three decoders on the same held-out frames, batch 32, timed side by side in one run:
  before       the previous decoder: the whole sequence recomputed at every step, action tokens or <eos>
               unconstrained, until <eos> or max_action_tokens;
  uncached     the same recomputation with the well-formedness constraint of the cached decoder;
  cached       `craft.policies.small_vla.core.generate_actions` (prefix once, KV cache).
`uncached` and `cached` must produce the same tokens; the ratios are per frame.
"""
import argparse
import time

import torch

from craft.frames import decode_datasets
from craft.policies.small_vla.core import collate, generate_actions, next_token_logits
from craft.policy import load_policy
from craft.project import find_root


@torch.no_grad()
def recomputed(vla, images, prompts, max_tokens: int, constrained: bool) -> list[list[int]]:
    "Greedy action tokens, every step a full forward over prefix and tokens so far; optionally well-formed."
    eos, sizes = vla.text_tokenizer.eos_token_id, torch.as_tensor(vla.action_tokenizer.token_sizes)
    missing = [vla.action_tokenizer.horizon * vla.action_tokenizer.dim] * len(prompts)
    out, done = [[] for _ in prompts], [False] * len(prompts)
    for _ in range(max_tokens):
        logits = next_token_logits(vla, collate(vla, [{"image": i, "prompt": p, "target": o}
                                                      for i, p, o in zip(images, prompts, out)]))
        for row in range(len(prompts)):
            if done[row]:
                continue
            allowed = torch.zeros(logits.shape[1], dtype=torch.bool)
            allowed[vla.n_text:vla.image_token] = sizes <= missing[row] if constrained else True
            allowed[eos] = missing[row] == 0 if constrained else True
            token = int(logits[row].masked_fill(~allowed, float("-inf")).argmax())
            out[row].append(token)
            done[row] = token == eos
            missing[row] -= int(sizes[token - vla.n_text]) if token != eos else 0
        if all(done):
            break
    return out


def main(n_rows: int, batch_size: int = 32) -> None:
    "Time the three decoders on `n_rows` held-out old-task frames and print per-frame seconds and ratios."
    root = find_root()
    policy = load_policy(root / "models" / "teacher")
    frames = decode_datasets(root, ["data/transfer_cube"], policy.frame_size, policy.config.chunk_size)
    old = frames["data/transfer_cube"]
    rows = old.rows("test")[::4][:n_rows]
    vla, budget = policy.vla, policy.config.max_action_tokens
    seconds, tokens = {"before": 0.0, "uncached": 0.0, "cached": 0.0}, {}
    for start in range(0, len(rows), batch_size):
        batch = old.batch(rows[start:start + batch_size])
        images = list(batch[policy.config.image_key])
        prompts = [policy.action_prompt(t, s) for t, s in zip(batch["task"], batch["observation.state"])]
        for name in seconds:
            t0 = time.perf_counter()
            if name == "cached":
                ids = generate_actions(vla, images, prompts, budget).ids
            else:
                ids = recomputed(vla, images, prompts, budget, constrained=name == "uncached")
            seconds[name] += time.perf_counter() - t0
            tokens.setdefault(name, []).extend(ids)
    assert tokens["uncached"] == tokens["cached"], "the cached decoder changed the tokens"
    whole = [sum(vla.action_tokenizer.token_sizes[t - vla.n_text] for t in ids[:-1]) for ids in tokens["before"]]
    n = len(rows)
    print(f"{n} frames, batch {batch_size}, budget {budget} tokens")
    for name in seconds:
        print(f"{name:>9}: {seconds[name] / n:.4f} s/frame, mean tokens {sum(map(len, tokens[name])) / n:.1f}")
    print(f"before / cached = {seconds['before'] / seconds['cached']:.1f}×, "
          f"uncached / cached = {seconds['uncached'] / seconds['cached']:.1f}× (same tokens)")
    chunk = policy.config.chunk_size * old.action.shape[-1]
    print(f"before: {sum(w == chunk for w in whole)}/{n} sequences a whole chunk")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="held-out frames to decode")
    main(parser.parse_args().rows)
