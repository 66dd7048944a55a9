"""LeRobot's own tools on the small policy: `lerobot-train` fine-tunes a checkpoint, `craft.policy.load_policy` opens
what it wrote, `lerobot-eval` runs that in gym-aloha; LeRobot discovers the installed plugin by its name."""
import json
import math
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import BIN, run
from lerobot.configs.types import FeatureType, PolicyFeature
from safetensors.torch import load_file

from craft.data import IMAGE_KEY, write_dataset
from craft.policies.small_vla.configuration_small_vla import SmallVLAConfig
from craft.policies.small_vla.core import VLAConfig
from craft.policies.small_vla.modeling_small_vla import SmallVLAPolicy, tokenized_chunks
from craft.policies.small_vla.tokenizers import FastActionTokenizer, build_text_tokenizer
from craft.policy import load_policy
from craft.sim import TASK_PROMPTS, rollout

ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl"}
D, CHUNK, STEPS = 14, 2, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny small_vla checkpoint (`teacher/`) and a two-episode insertion LeRobotDataset (`data/`), made offline."
    out = tmp_path_factory.mktemp("lerobot_cli")
    eps = [rollout("insertion", 100_000 + i, frame_every=40, image_size=(48, 64)) for i in range(2)]   # 10 frames each
    write_dataset(out / "data", eps, {"train": 2}, fps=10, prompt=TASK_PROMPTS["insertion"])
    states = np.concatenate([e.states for e in eps])
    chunks = np.concatenate([e.actions[np.minimum(np.arange(len(e.actions))[:, None] + np.arange(CHUNK),
                                                  len(e.actions) - 1)] for e in eps])
    features = {IMAGE_KEY: PolicyFeature(FeatureType.VISUAL, (3, 48, 64)),
                "observation.state": PolicyFeature(FeatureType.STATE, (D,))}
    cfg = SmallVLAConfig(vla=VLAConfig(image_size=24, patch_size=12, layers=2, width=64, vision_width=64, mlp=128),
                         input_features=features, output_features={"action": PolicyFeature(FeatureType.ACTION, (D,))},
                         state_low=states.min(0).tolist(), state_high=states.max(0).tolist(), state_bins=8,
                         chunk_size=CHUNK, n_action_steps=CHUNK, max_action_tokens=CHUNK * D + 1, device="cpu")
    torch.manual_seed(0)
    text = build_text_tokenizer([*TASK_PROMPTS.values(), "State: Action:", " ".join(map(str, range(8)))], 300)
    policy = SmallVLAPolicy(cfg, text, FastActionTokenizer(10, 300).fit(tokenized_chunks(cfg, chunks, states)))
    policy.save_pretrained(out / "teacher")
    return out


def lerobot(tool: str, *args: str, cwd, check: bool = True) -> subprocess.CompletedProcess:
    "Run one of LeRobot's console scripts from the project's environment, offline, on one thread."
    return run([str(BIN / tool), *args], cwd, check=check, env=ENV)


@pytest.fixture(scope="module")
def trained(tiny):
    "`lerobot-train` from the tiny checkpoint for STEPS steps, a checkpoint at the end: its folder and the log."
    result = lerobot("lerobot-train", f"--policy.path={tiny / 'teacher'}", "--dataset.repo_id=craft/data",
                     f"--dataset.root={tiny / 'data'}", "--dataset.video_backend=pyav", f"--steps={STEPS}",
                     "--batch_size=2", f"--save_freq={STEPS}", "--log_freq=1", "--eval_freq=0", "--num_workers=0",
                     "--wandb.enable=false", f"--output_dir={tiny / 'train'}", cwd=tiny)
    return tiny / "train" / "checkpoints" / f"{STEPS:06d}", result.stdout + result.stderr


def test_lerobot_train_fine_tunes_our_checkpoint(tiny, trained):
    folder, log = trained
    model = folder / "pretrained_model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "action_tokenizer.json", "policy_preprocessor.json",
            "policy_postprocessor.json", "train_config.json"} <= {p.name for p in model.iterdir()}
    assert json.loads((folder / "training_state" / "training_step.json").read_text()) == {"step": STEPS}
    losses = [float(x) for x in re.findall(r"step:\d+ .*?loss:([-\d.naif]+)", log)]
    assert len(losses) == STEPS and all(math.isfinite(x) and x > 0 for x in losses), log[-3000:]

    policy = load_policy(model)                                           # our own API opens what LeRobot wrote
    assert type(policy) is SmallVLAPolicy and not policy.training
    before, after = load_file(tiny / "teacher" / "model.safetensors"), load_file(model / "model.safetensors")
    state = policy.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in before)     # the steps changed the weights
    teacher = load_policy(tiny / "teacher")
    assert policy.vla.text_tokenizer.get_vocab() == teacher.vla.text_tokenizer.get_vocab()
    assert policy.vla.action_tokenizer.bpe.to_str() == teacher.vla.action_tokenizer.bpe.to_str()
    batch = {IMAGE_KEY: torch.rand(1, 3, 48, 64), "observation.state": torch.zeros(1, D), "task": ["insert"]}
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (1, CHUNK, D) and chunk.isfinite().all()


def test_lerobot_eval_runs_the_trained_checkpoint_in_gym_aloha(tiny, trained):
    out = tiny / "eval"
    result = lerobot("lerobot-eval", f"--policy.path={trained[0] / 'pretrained_model'}", "--env.type=aloha",
                     "--env.task=AlohaInsertion-v0", "--env.episode_length=20", "--eval.n_episodes=1",
                     "--eval.batch_size=1", f"--output_dir={out}", cwd=tiny)
    assert "at most 20 steps" in result.stderr + result.stdout
    info = json.loads((out / "eval_info.json").read_text())
    overall, metrics = info["overall"], info["per_task"][0]["metrics"]
    assert overall["n_episodes"] == 1 and overall["pc_success"] in (0.0, 100.0)
    assert len(metrics["max_rewards"]) == 1 and 0 <= metrics["max_rewards"][0] <= 4
    video = iio.imread(overall["video_paths"][0], plugin="pyav")
    assert video.shape == (20, 480, 640, 3) and video.std() > 0          # a frame per step, a scene in them


def test_a_bare_configuration_is_refused_with_a_way_forward(tiny):
    result = lerobot("lerobot-train", "--policy.type=small_vla", "--dataset.repo_id=craft/data",
                     f"--dataset.root={tiny / 'data'}", "--dataset.video_backend=pyav", "--steps=1",
                     "--wandb.enable=false", f"--output_dir={tiny / 'bare'}", cwd=tiny, check=False)
    assert result.returncode != 0
    assert "ValueError: a SmallVLAPolicy needs the text and action tokenizers" in result.stderr
    assert "--policy.path=models/teacher" in result.stderr and "TypeError" not in result.stderr


def test_lerobot_discovers_the_installed_plugin():
    script = """
import json, sys
from lerobot.policies.factory import get_policy_class
from lerobot.utils.import_utils import register_third_party_plugins
imported = "craft" in sys.modules
register_third_party_plugins()          # what lerobot-train and lerobot-eval do first: lerobot_policy_* distributions
cls = get_policy_class("small_vla")
print(json.dumps([imported, cls.__module__, cls.__name__]))
"""
    result = run([sys.executable, "-c", script], BIN, env=ENV)
    imported, module, name = json.loads(result.stdout.strip().splitlines()[-1])
    assert imported is False                                           # nothing of ours was loaded before discovery
    assert (module, name) == ("craft.policies.small_vla.modeling_small_vla", "SmallVLAPolicy")
