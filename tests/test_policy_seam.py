"""A third policy, written here, goes through the anchor cache, a CRaFT step and MCQ scoring with no procedure changed.

`BagPolicy` implements `craft.policy.Policy` and nothing else: an image is its mean colour, a prompt its bytes, and
each layer mixes the tokens through their mean. It is registered the way a real one would be, by its type in
`craft.policy.POLICY_CLASSES`.
"""
import json
import math

import numpy as np
import pytest
import torch
from conftest import copy_repo
from safetensors.torch import load_file, save_file
from torch import nn

from craft import policy as interface
from craft.anchor_cache import AnchorCacheDataset, AnchorLoader, CacheConfig, build_anchor_cache, teacher_targets
from craft.config import CraftConfig, TrainConfig
from craft.data import IMAGE_KEY, load_mcq
from craft.evaluate import action_error
from craft.frames import decode_datasets
from craft.loaders import TaskLoader
from craft.mcq import choice_scores
from craft.policy import TOKEN_TYPES, ActionDecoder, Policy, TokenPolicy, load_policy, missing_members, select_layers
from craft.run import Run
from craft.train import update_step

DATASET = "data/insertion"


class BagPolicy(nn.Module):
    "A third policy: mean-colour image token, byte tokens, `layers` token-mixing blocks, a chunk head, a byte head."

    def __init__(self, width: int = 16, layers: int = 2, chunk: int = 4, action_dim: int = 14):
        super().__init__()
        self.settings = {"type": "bag", "width": width, "layers": layers, "chunk": chunk, "action_dim": action_dim}
        self.config = type("Config", (), {"chunk_size": chunk})()
        self.image, self.bytes = nn.Linear(3, width), nn.Embedding(256, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.actions, self.next_byte = nn.Linear(width, chunk * action_dim), nn.Linear(width, 256)

    feature_width = property(lambda self: self.settings["width"])
    frame_size = property(lambda self: (24, 24))
    language_layers = property(lambda self: len(self.blocks))

    def _states(self, images: list, prompts: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        "Embeddings and every layer's output (B, 1 + L, D), and the token types (B, 1 + L)."
        colour = torch.stack([torch.as_tensor(i).float().mean((0, 1)) / 255 for i in images])          # (B, 3)
        raw = [list(p.encode())[:64] for p in prompts]
        width = max(map(len, raw))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in raw])                                     # (B, L)
        text = torch.arange(width)[None] < torch.tensor([len(r) for r in raw])[:, None]
        types = torch.cat([torch.full((len(raw), 1), TOKEN_TYPES["image"]),
                           torch.where(text, TOKEN_TYPES["text"], TOKEN_TYPES["pad"])], 1)
        seen = (types != TOKEN_TYPES["pad"]).float()[..., None]
        x = torch.cat([self.image(colour)[:, None], self.bytes(ids)], 1) * seen
        states = [x]
        for block in self.blocks:
            mean = x.sum(1, keepdim=True) / seen.sum(1, keepdim=True)
            x = (x + torch.tanh(block(x + mean))) * seen
            states.append(x)
        return states, types

    def hidden_states(self, images, prompts, layers):
        states, types = self._states(images, prompts)
        return select_layers(states, layers), types

    def task_loss(self, batch):
        states, _ = self._states(list(batch[IMAGE_KEY]), list(batch["task"]))
        target = batch["action"][:, :self.settings["chunk"]].flatten(1).float()
        return (self.actions(states[-1][:, 0]) - target).pow(2).mean(), len(target)

    def continuation_logprob(self, images, prompts, continuations):
        states, types = self._states(images, prompts)
        last = states[-1][torch.arange(len(prompts)), (types != TOKEN_TYPES["pad"]).sum(1) - 1]         # (B, D)
        logp = torch.log_softmax(self.next_byte(last), -1)
        return torch.stack([logp[b, list(c.encode())].sum() for b, c in enumerate(continuations)])

    def choice_logprobs(self, images, prompts, choices):
        return [self.continuation_logprob([i] * len(c), [p] * len(c), c) for i, p, c in zip(images, prompts, choices)]

    def action_prompt(self, task, state):
        return f"{task} at {' '.join(f'{v:.1f}' for v in state[:3].tolist())}"

    @staticmethod
    def question_prompt(question, choices):
        return f"{question} ({' / '.join(choices)})"

    def save_pretrained(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.settings))
        save_file(self.state_dict(), folder / "model.safetensors")

    @classmethod
    def from_pretrained(cls, folder, **kwargs):
        settings = json.loads((folder / "config.json").read_text())
        policy = cls(**{k: v for k, v in settings.items() if k != "type"})
        policy.load_state_dict(load_file(folder / "model.safetensors"))
        return policy

    def get_optim_params(self):
        return self.parameters()


@pytest.fixture(scope="module")
def seam(tmp_path_factory):
    "A copy of the repository with its data, the third policy saved as a teacher, its frames and anchor cache."
    root, tmp = copy_repo(tmp_path_factory.mktemp("repo"), "params.yaml", {}), tmp_path_factory.mktemp("seam")
    torch.manual_seed(0)
    teacher_dir = tmp / "teacher"
    BagPolicy().save_pretrained(teacher_dir)
    frames = decode_datasets(root, [DATASET], (24, 24), 4)
    craft = CraftConfig(enabled=True, anchor_cache_dir=str(tmp / "cache"), anchor_batch_size=4, retention_freq=1)
    build_anchor_cache(BagPolicy.from_pretrained(teacher_dir), teacher_dir, frames[DATASET], DATASET, craft,
                       CacheConfig(num_anchors=8, batch_size=4, shard_size=8), tmp / "cache", progress=False)
    return root, teacher_dir, frames, craft


def test_it_implements_the_policy_type_and_loads_by_its_type(seam, monkeypatch):
    _, teacher_dir, _, _ = seam
    assert missing_members(BagPolicy) == [] and isinstance(BagPolicy(), Policy)
    assert missing_members(BagPolicy, TokenPolicy) and missing_members(BagPolicy, ActionDecoder)
    monkeypatch.setitem(interface.POLICY_CLASSES, "bag", "test_policy_seam.BagPolicy")
    opened = load_policy(teacher_dir)
    assert type(opened).__name__ == "BagPolicy" and not opened.training


def test_a_craft_step_at_the_teachers_weights_retains_and_updates(seam):
    _, teacher_dir, frames, craft = seam
    student = BagPolicy.from_pretrained(teacher_dir)
    cache = AnchorCacheDataset(craft.anchor_cache_dir, teacher_dir, craft, student.feature_width)
    assert len(cache) == 8 and set(cache.targets) == {"layer-2/vision_token_mean", "layer-2/text_token_last",
                                                      "layer-1/vision_token_mean", "layer-1/text_token_last"}
    cfg = TrainConfig(steps=10, batch_size=4, lr=1e-3, warmup_steps=0)
    run = Run.start(student, cfg, craft, TaskLoader(frames[DATASET], 4, 0), AnchorLoader(cache, frames, 4, 0))
    before = [p.detach().clone() for p in student.parameters()]
    row = update_step(run, next(run.tasks), 1)
    assert row["retained"] and row["skipped"] == 0 and math.isfinite(row["loss"])
    assert row["retention_loss"] < 1e-5              # the teacher's own features, through float16: near zero
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters()))


def test_its_questions_are_scored_and_the_token_features_refused_by_name(seam):
    root, teacher_dir, frames, _ = seam
    policy = BagPolicy.from_pretrained(teacher_dir).eval()
    records = [r for r in load_mcq(root / "data" / "mcq" / "test.jsonl", root) if r.image.root == DATASET][:6]
    images = [frames.image(r.image) for r in records]
    batched, one_by_one = choice_scores(policy, records, images, 4), choice_scores(policy, records, images, 4, True)
    assert len(batched) == 6 and all(len(s) == len(r.choices) for s, r in zip(batched, records))
    for a, b in zip(batched, one_by_one):
        assert np.allclose(a, b, atol=1e-5)
    with pytest.raises(TypeError, match=r"needs a policy with the TokenPolicy members .* BagPolicy lacks"):
        teacher_targets(policy, images[:1], ["x"], CraftConfig(retention_mode="token"))
    with pytest.raises(TypeError, match=r"the ActionDecoder members .* BagPolicy lacks decode_chunks"):
        action_error(policy, frames[DATASET], frames[DATASET].rows("test")[:2])
