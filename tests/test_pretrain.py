"""The `pretrain` stage's teacher and metrics, from the pipeline run on a temporary copy under tiny parameters."""
import json

import torch
from conftest import TINY
from lerobot.policies.factory import get_policy_class

from craft.data import load_mcq
from craft.frames import decode_frames


def test_teacher_loads_through_lerobot_and_acts(repo):
    teacher = get_policy_class("small_vla").from_pretrained(repo / "models" / "teacher")
    assert teacher.config.vla.image_size == TINY["policy"]["vla"]["image_size"]
    assert len(teacher.config.state_low) == 14
    saved = json.loads((repo / "models" / "teacher" / "pretrain_config.json").read_text())
    assert saved["steps"] == TINY["pretrain"]["steps"]
    old = decode_frames(repo / "data" / "transfer_cube", teacher.config.vla.image_size, teacher.config.chunk_size)
    rows = old.rows("test")[:2]
    chunk = teacher.predict_action_chunk(old.batch(rows))
    assert chunk.shape == (2, teacher.config.chunk_size, 14) and torch.isfinite(chunk).all()


def test_metrics_cover_every_family_and_reference(repo):
    metrics = json.loads((repo / "metrics" / "pretrain.json").read_text())
    held_out = load_mcq(repo / "data" / "mcq" / "test.jsonl", repo)
    families = {r.family for r in held_out} | {"overall"}
    for model in ("teacher", "questions_only", "untrained"):
        mcq = metrics[model]["mcq"]
        assert set(mcq) == families
        assert mcq["overall"]["n"] == len(held_out)
        assert all(0 <= m["acc"] <= 1 and 0 < m["chance"] < 1 for m in mcq.values())
        assert metrics[model]["old_task_action_loss"] > 0
    assert metrics["parameters"] > 0 and metrics["peak_memory_mb"] > 0
    assert metrics["seconds"]["total"] >= metrics["seconds"]["teacher"] > 0
    logged = (repo / "dvclive" / "pretrain" / "plots" / "metrics" / "teacher" / "loss.tsv").read_text().split()
    assert logged[:2] == ["step", "loss"] and int(logged[-2]) == TINY["pretrain"]["steps"]
