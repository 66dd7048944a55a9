"""The train stages on the tiny pipeline, and the trainer spread over two processes by `accelerate launch`."""
import csv
import json
import math
import shutil
import sys

import pytest
import torch
import yaml
from conftest import ROOT, TINY, run
from safetensors.torch import load_file


def history(folder) -> list[dict]:
    "The λ history a checkpoint holds."
    with open(folder / "lambda_history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_both_methods_train_and_checkpoint(repo):
    steps, k = TINY["train"]["steps"], 5                                 # params.yaml craft.retention_freq
    for method in ("baseline", "craft"):
        final = repo / "models" / method / "final"
        assert {"config.json", "model.safetensors", "scheduler.pt", "train_config.json",
                "craft_state.pt", "lambda_history.csv"} <= {p.name for p in final.iterdir()}
        report = json.loads((repo / "metrics" / "train" / f"{method}.json").read_text())
        assert report["steps"] == steps and report["final"]["train/skipped_steps"] == 0
        logged = (repo / "dvclive" / "train" / method / "plots" / "metrics" / "train" / "loss.tsv").read_text()
        assert logged.split()[-2] == str(steps)
    assert history(repo / "models" / "baseline" / "final") == []
    rows = history(repo / "models" / "craft" / "final")
    assert [int(r["step"]) for r in rows] == list(range(k, steps + 1, k))
    assert (repo / "dvclive" / "train" / "craft" / "plots" / "metrics" / "craft" / "lambda.tsv").exists()
    teacher = load_file(repo / "models" / "teacher" / "model.safetensors")
    tuned = load_file(repo / "models" / "craft" / "final" / "model.safetensors")
    assert any(not torch.equal(teacher[name], tuned[name]) for name in teacher)


def test_two_processes_agree_with_one(repo, tmp_path):
    script = str(ROOT / "tests" / "distributed_fine_tune.py")
    run([sys.executable, script, str(repo), str(tmp_path / "one")], ROOT)
    run(["accelerate", "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", script, str(repo), str(tmp_path / "two")], ROOT)
    one, two = (load_file(tmp_path / name / "final" / "model.safetensors") for name in ("one", "two"))
    for name, value in one.items():
        assert torch.allclose(value, two[name], atol=1e-5), name
    lam_one, lam_two = (history(tmp_path / name / "final") for name in ("one", "two"))
    assert len(lam_one) == 2
    for a, b in zip(lam_one, lam_two):
        assert abs(float(a["lambda"]) - float(b["lambda"])) < 1e-6
        assert abs(float(a["retention_loss"]) - float(b["retention_loss"])) < 1e-6


def test_the_train_stage_runs_in_two_processes_through_dvc(repo, tmp_path):
    two = tmp_path / "two"
    shutil.copytree(repo, two)
    params = yaml.safe_load((two / "params.yaml").read_text())
    params["launch"] = {"processes": 2, "config": ""}
    (two / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = run(["dvc", "repro", "train@craft"], two)
    assert "Running stage 'train@craft'" in done.stdout and "train@craft' didn't change" not in done.stdout
    assert "stage train@craft done in" in done.stderr and "(2 processes)" in done.stderr, done.stderr
    one, both = (load_file(root / "models" / "craft" / "final" / "model.safetensors") for root in (repo, two))
    for name, value in one.items():
        assert torch.allclose(value, both[name], atol=1e-5), name
    lam_one, lam_two = (history(root / "models" / "craft" / "final") for root in (repo, two))
    assert len(lam_one) == len(lam_two) > 0
    for a, b in zip(lam_one, lam_two):
        assert abs(float(a["lambda"]) - float(b["lambda"])) < 1e-6
    assert json.loads((two / "metrics" / "train" / "craft.json").read_text())["steps"] == TINY["train"]["steps"]
    assert "up to date" in run(["dvc", "status", "train@craft"], two).stdout


@pytest.fixture(scope="module")
def trainer_inputs(repo):
    "The tiny pipeline's params, teacher, anchor cache and both tasks' decoded frames."
    from craft.anchor_cache import AnchorCacheDataset
    from craft.config import CraftConfig, from_section
    from craft.frames import decode_datasets

    params = yaml.safe_load((repo / "params.yaml").read_text())
    teacher = repo / "models" / "teacher"
    config = json.loads((teacher / "config.json").read_text())
    craft_cfg = from_section(CraftConfig, {**params["craft"], "enabled": True}, "craft")
    cache = AnchorCacheDataset(repo / params["craft"]["anchor_cache_dir"], teacher, craft_cfg, config["vla"]["width"])
    names = [params["data"]["new_task"], params["data"]["old_task"]]
    frames = decode_datasets(repo, names, config["vla"]["image_size"], config["chunk_size"])
    return params, teacher, cache, frames


@pytest.mark.parametrize("method", list(yaml.safe_load((ROOT / "params.yaml").read_text())["methods"]))
def test_every_method_trains_with_its_defining_property(trainer_inputs, tmp_path, method):
    from craft.anchor_cache import AnchorLoader
    from craft.config import method_configs
    from craft.loaders import task_loader
    from craft.policies.small_vla.modeling_small_vla import SmallVLAPolicy
    from craft.run import Run
    from craft.train import fine_tune

    params, teacher, cache, frames = trainer_inputs
    craft_section = {**params["craft"], "retention_freq": 2, "epsilon_start": 0.0, "epsilon_end": 0.0}
    train_section = {**params["train"], "steps": 6, "log_freq": 1, "save_freq": 6}
    craft_cfg, cfg = method_configs(method, params["methods"], craft_section, train_section)
    new, old = frames[params["data"]["new_task"]], frames[params["data"]["old_task"]]
    anchors = AnchorLoader(cache, frames, craft_cfg.anchor_batch_size, cfg.seed) if craft_cfg.enabled else None
    run = Run.start(SmallVLAPolicy.from_pretrained(teacher), cfg, craft_cfg, task_loader(new, old, cfg), anchors)
    rows = fine_tune(run, tmp_path, progress=False)
    assert all(math.isfinite(r["loss"]) for r in rows) and rows[-1]["skipped"] == 0
    lambdas = [float(r["lambda"]) for r in history(tmp_path / "final")]
    assert len(lambdas) == (3 if craft_cfg.enabled else 0)                 # retention passes at steps 2, 4, 6
    if method == "craft":
        assert lambdas[0] < lambdas[1] < lambdas[2]                         # ε = 0: the constraint binds
    if method == "craft_fixed_lambda":
        assert lambdas == [craft_cfg.initial_lambda] * 3
    if method == "projection_only":
        assert lambdas == [0.0] * 3                                         # no retention term, ever
    if method == "craft_per_layer":
        assert craft_cfg.surgery_granularity == "tensor"
        assert all(0 <= float(r["conflict"]) <= 1 for r in history(tmp_path / "final"))
    if method == "craft_no_projection":
        assert not craft_cfg.use_grad_projection
    loaders = torch.load(tmp_path / "final" / "craft_state.pt", weights_only=True)["loaders"]["tasks"]
    if method == "replay":
        drawn = loaders["old"]["epoch"] * len(old.rows("train")) + loaders["old"]["position"]
        assert cfg.replay_samples >= 1 and drawn == 6 * cfg.replay_samples
    else:
        assert "old" not in loaders
    penalties = [r["l2_init"] for r in rows]
    if method == "l2_init":
        assert penalties[0] == 0.0 and all(p > 0 for p in penalties[1:])   # zero at the teacher's weights
    else:
        assert all(math.isnan(p) for p in penalties)
