"""The full experiment (full/dvc.yaml) with LeRobot's real pi0_fast at CI size, offline, on a temporary copy.

The repository's insertion data stands in for `lerobot/aloha_sim_insertion_human` under `$HF_LEROBOT_HOME`, with
its recorded splits removed (as on the hub) so that the declared split rule is what splits it.
"""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import copy_repo, run
from PIL import Image

from craft.policies.pi0_fast.modeling_pi0_fast import CI_SIZE
from craft.policies.pi0_fast.teacher import CI_POLICY

DATASET = "lerobot/aloha_sim_insertion_human"
# CI size (craft.policies.pi0_fast.modeling_pi0_fast.CI_SIZE): a 4 096-token vocabulary, Gemma width 64 × 2 layers,
# a one-layer SigLIP on 56 px.
FULL_TINY = {
    "data": {"mcq_test": "full/mcq/test.jsonl", "splits": {DATASET: {"train": "0:30", "test": "30:32"}}},
    "teacher": {"pretrained": "", "text_tokenizer": "", "action_tokenizer": "", "fast_vocab": 1024,
                "size": dataclasses.asdict(CI_SIZE)},
    "policy": CI_POLICY,
    "cache": {"num_anchors": 12, "batch_size": 6, "shard_size": 6},
    "craft": {"anchor_batch_size": 4, "retention_freq": 2},
    "train": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "log_freq": 2, "save_freq": 2, "keep_last": 1},
    "evaluate": {"batch_size": 8, "n_boot": 100},
}


def write_questions(folder, n: int = 4) -> None:
    "A small JSONL of yes/no questions about image files beside it, as a user's MCQ set looks."
    folder.mkdir(parents=True, exist_ok=True)
    rng, lines = np.random.default_rng(0), []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / f"q{i}.png")
        lines.append(json.dumps({"id": f"q{i}", "question": "Is the peg inside the socket?", "choices": ["yes", "no"],
                                 "answer": i % 2, "family": "insertion", "image": {"path": f"q{i}.png"}}))
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def full(tmp_path_factory):
    "A copy of the repository after `dvc repro full/dvc.yaml` at CI size, and the environment it ran in."
    dst = copy_repo(tmp_path_factory.mktemp("full"), "full/params.yaml", FULL_TINY)
    home = tmp_path_factory.mktemp("lerobot_home")
    shutil.copytree(dst / "data" / "insertion", home / DATASET)
    info_path = home / DATASET / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    del info["splits"]
    info_path.write_text(json.dumps(info))
    write_questions(dst / "full" / "mcq")
    env = {"HF_LEROBOT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    run(["dvc", "repro", "full/dvc.yaml"], dst, env=env)
    return dst, env


def test_full_pipeline_runs_every_stage_with_pi0_fast(full):
    repo, _ = full
    locked = yaml.safe_load((repo / "full" / "dvc.lock").read_text())["stages"]
    assert sorted(locked) == ["cache", "eval", "plots", "preview", "teacher", "train@baseline", "train@craft"]
    teacher = json.loads((repo / "full" / "models" / "teacher" / "config.json").read_text())
    assert teacher["type"] == "pi0_fast"
    report = json.loads((repo / "full" / "metrics" / "teacher.json").read_text())
    assert report["transformers"] in ("stock", "patched") and report["feature_width"] == 64
    results = json.loads((repo / "full" / "metrics" / "eval.json").read_text())["checkpoints"]
    assert list(results) == ["teacher", "baseline", "craft"]
    for entry in results.values():
        assert entry["mcq"]["overall"]["n"] == 4 and 0 <= entry["mcq"]["overall"]["acc"] <= 1
        assert entry["new_task"]["action_token_loss"] > 0 and 0 <= entry["new_task"]["decoded"] <= 1
        assert 0 <= entry["new_task"]["constraint_overrides"] <= 1 and "action_mse" in entry["new_task"]
        assert "old_task" not in entry
    history = (repo / "full" / "models" / "craft" / "final" / "lambda_history.csv").read_text().splitlines()
    assert len(history) == 1 + 2                                           # retention at steps 2 and 4
    assert (repo / "full" / "plots" / "checkpoints.png").stat().st_size > 0
    assert "up to date" in run(["dvc", "status", "full/dvc.yaml"], repo, env=full[1]).stdout


def test_checkpoints_reload_offline_as_lerobots_class(full):
    from lerobot.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy

    from craft.policy import load_policy

    repo, _ = full
    policy = load_policy(repo / "full" / "models" / "craft" / "final")
    assert isinstance(policy, PI0FastPolicy) and not policy.training
    assert (repo / "full" / "models" / "craft" / "final" / "text_tokenizer" / "tokenizer.json").is_file()


def test_craft_steps_with_surgery_and_dual_update_resume_exactly(full, tmp_path, monkeypatch):
    from craft.anchor_cache import AnchorCacheDataset, AnchorLoader
    from craft.config import CraftConfig, TrainConfig
    from craft.frames import decode_datasets
    from craft.loaders import TaskLoader
    from craft.policy import load_policy
    from craft.run import Run
    from craft.train import fine_tune

    repo, env = full
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    teacher = repo / "full" / "models" / "teacher"
    craft = CraftConfig(enabled=True, anchor_cache_dir="full/cache/anchors", anchor_batch_size=4, retention_freq=1,
                        lambda_lr=0.5, epsilon_start=0.0, epsilon_end=0.0, conflict_threshold=1.0)   # always project
    cfg = TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, log_freq=1, save_freq=2, keep_last=2)
    splits = FULL_TINY["data"]["splits"]

    def run_to(out, resume=None):
        policy = load_policy(teacher)
        frames = decode_datasets(repo, [DATASET], policy.frame_size, policy.config.chunk_size, splits)
        cache = AnchorCacheDataset(repo / craft.anchor_cache_dir, teacher, craft, policy.feature_width)
        run = Run.start(policy, cfg, craft, TaskLoader(frames[DATASET], cfg.batch_size, cfg.seed),
                        AnchorLoader(cache, frames, craft.anchor_batch_size, cfg.seed))
        return fine_tune(run, out, resume=resume, progress=False)

    rows = run_to(tmp_path / "whole")
    assert [r["conflict"] for r in rows] == [1.0] * 4                      # surgery on every retention step
    lambdas = [r["lambda"] for r in rows]
    assert lambdas == sorted(lambdas) and lambdas[-1] > craft.initial_lambda   # ε = 0: the dual variable rises
    run_to(tmp_path / "resumed", resume=tmp_path / "whole" / "step_000002")
    from safetensors.torch import load_file

    whole, resumed = (load_file(tmp_path / name / "final" / "model.safetensors") for name in ("whole", "resumed"))
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)


def test_a_missing_dataset_stops_the_teacher_stage_with_the_fetch_command(full, tmp_path):
    repo, env = full
    bad = tmp_path / "bad"
    shutil.copytree(repo, bad)
    params = yaml.safe_load((bad / "full" / "params.yaml").read_text())
    params["data"]["new_task"] = "lerobot/not_downloaded"
    (bad / "full" / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro", "full/dvc.yaml:teacher"], bad, check=False, env=env)
    assert result.returncode != 0
    assert "dataset 'lerobot/not_downloaded' is not on this machine" in result.stdout + result.stderr
    assert "LeRobotDataset('lerobot/not_downloaded')" in result.stdout + result.stderr
