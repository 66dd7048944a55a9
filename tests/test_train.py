"""The train stages on the tiny pipeline, and the trainer spread over two processes by `accelerate launch`."""
import csv
import json
import sys

import torch
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
        assert {"config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "train_config.json",
                "craft_state.pt", "lambda_history.csv"} <= {p.name for p in final.iterdir()}
        report = json.loads((repo / "metrics" / f"train_{method}.json").read_text())
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
