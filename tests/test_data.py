"""The raw data: the shipped copy restored by `dvc pull`, and the collection notebook that makes it, for real."""
import json
import shutil

import nbformat
import papermill
import pytest
from conftest import TINY, copy_repo, run

from craft.data import load_dataset, load_mcq, split_episodes
from craft.evaluate import prior_table
from craft.rollout import RECORDED_SEEDS
from craft.sim import FAMILIES

CHUNK = [k / 10 for k in range(8)]   # 8 future actions at the datasets' 10 fps


def check_data(root, n_train: int, n_test: int) -> dict:
    "Both datasets load through LeRobot with action chunks and their splits; both MCQ files validate."
    report = json.loads((root / "data" / "collection.json").read_text())
    assert set(report["tasks"]) == set(RECORDED_SEEDS), "the tasks 00_collect records"
    for task in RECORDED_SEEDS:
        folder = root / "data" / task
        assert split_episodes(folder, "train") == list(range(n_train))
        assert split_episodes(folder, "test") == list(range(n_train, n_train + n_test))
        ds = load_dataset(folder, "train", delta_timestamps={"action": CHUNK})
        assert ds.num_episodes == n_train and ds.fps == report["fps"]
        item = ds[len(ds) - 1]                                 # the last frame: the chunk runs off the end
        assert item["action"].shape == (8, 14) and item["action_is_pad"][1:].all()
        assert item["observation.images.top"].shape == (3, *report["image_size"])
        assert report["tasks"][task]["episodes"] == n_train + n_test
    for split, episodes in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        records = load_mcq(root / "data" / "mcq" / f"{split}.jsonl", root)
        assert {r.family for r in records} == set(FAMILIES)
        assert {r.image.episode for r in records} <= set(episodes), f"{split} questions must come from {split} episodes"
    return report


def test_shipped_data_restores_and_loads(repo):
    report = check_data(repo, 30, 10)
    for task, stats in report["tasks"].items():
        assert stats["success_rate"] >= 0.9, (task, stats)
    train, test = (load_mcq(repo / "data" / "mcq" / f"{split}.jsonl", repo) for split in ("train", "test"))
    chance = sum(1 / len(r.choices) for r in test) / len(test)
    assert prior_table(train, test)["overall"] < chance + 0.03, "answers balanced per subject: the text alone guesses"
    assert set(report["left_out_test"]) == {"lifted/socket", "side/socket"}, report["left_out_test"]


@pytest.mark.parametrize("workers", [2])
def test_collection_notebook_records_tiny_data(repo, tmp_path, workers):
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    params = {"episodes": {"train": 2, "test": 1}, "image_size": [48, 64],
              "questions_per_answer": {"train": 2, "test": 1}, "workers": workers}
    papermill.execute_notebook(copy / "nbs" / "pipeline" / "00_collect.ipynb", tmp_path / "collect.ipynb",
                               parameters=params, kernel_name="python3", cwd=copy / "nbs" / "pipeline",
                               progress_bar=False)
    check_data(copy, 2, 1)
    assert not (copy / "data.tmp").exists()
    nb = nbformat.read(tmp_path / "collect.ipynb", as_version=4)
    figures = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) == 2, "the notebook shows its frame strips and its question counts"


def test_damaged_data_stops_the_pipeline_named_with_the_way_back(tmp_path):
    repo = copy_repo(tmp_path, "params.yaml", TINY)
    damaged = repo / "data" / "insertion" / "meta" / "tasks.parquet"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode != 0
    message = ("data/ differs from what git's HEAD records in data.dvc (changed: insertion/meta/tasks.parquet). "
               "Restore it: `git checkout HEAD -- data.dvc && dvc checkout --force data.dvc`")
    assert message in result.stderr, result.stderr
    assert not (repo / "models" / "teacher").exists()                   # nothing was trained on it
    run(["git", "checkout", "HEAD", "--", "data.dvc"], repo)
    run(["dvc", "checkout", "--force", "data.dvc"], repo)
    assert "up to date" in run(["dvc", "status", "data.dvc"], repo).stdout
    assert not run(["git", "status", "--porcelain", "data.dvc"], repo).stdout    # the record is HEAD's again
