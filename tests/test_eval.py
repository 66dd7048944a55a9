"""The eval, rollout and plots stages on the tiny pipeline, and the README results blocks filled from their output."""
import json
import shutil

import imageio.v3 as iio
from conftest import run


def test_eval_compares_every_checkpoint(repo):
    results = json.loads((repo / "metrics" / "eval.json").read_text())["checkpoints"]
    assert list(results) == ["teacher", "baseline", "craft"]
    assert results["teacher"]["retention"] == 1.0 and results["teacher"]["vs_teacher"]["diff"] == 0.0
    assert "training" not in results["craft"]                # timings live in metrics/train, read by `make results`
    for c in results.values():
        overall = c["mcq"]["overall"]
        assert overall["acc_ci"][0] <= overall["acc"] <= overall["acc_ci"][1]
        for task in ("old_task", "new_task"):
            m = c[task]
            assert m["action_token_loss"] > 0 and m["action_mse"] >= 0
            assert m["decoded"] == 1.0                    # the token budget fits any well-formed chunk
            assert m["hold_state_mse"] > 0 and m["train_mean_mse"] > 0


def test_the_headline_is_one_readable_metrics_row(repo):
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    results = json.loads((repo / "metrics" / "eval.json").read_text())["checkpoints"]
    assert list(summary) == list(results)
    for name, row in summary.items():
        mcq, floor = results[name]["mcq"]["overall"]["acc"], results[name]["mcq_shuffled_images"]["overall"]["acc"]
        assert row == {"mcq": mcq, "above_floor": mcq - floor, "old_task_loss": results[name]["old_task"]
                       ["action_token_loss"], "new_task_loss": results[name]["new_task"]["action_token_loss"]}
    table = run(["dvc", "metrics", "show", "--md", "metrics/summary.json"], repo).stdout
    assert "craft.above_floor" in table and max(map(len, table.splitlines())) < 400, table
    every = run(["dvc", "metrics", "show", "--md"], repo).stdout               # full/ has its own, the sweeps none
    rows = {line.split("|")[1].strip() for line in every.splitlines()[2:] if line.startswith("|")}
    assert {row for row in rows if not row.startswith("full/")} == {
        "metrics/summary.json", "metrics/rollout_summary.json", "metrics/train/baseline.json",
        "metrics/train/craft.json"}, every


def test_rollout_runs_every_checkpoint_in_the_simulator(repo):
    results = json.loads((repo / "metrics" / "rollout.json").read_text())
    assert list(results) == ["teacher", "baseline", "craft"]
    summary = json.loads((repo / "metrics" / "rollout_summary.json").read_text())
    assert summary == {name: {f"{task}_success": r["success_rate"] for task, r in tasks.items()}
                       for name, tasks in results.items()}
    for name, tasks in results.items():
        assert {key: r["task"] for key, r in tasks.items()} == {"old_task": "transfer_cube", "new_task": "insertion"}
        for r in tasks.values():
            assert r["n"] == 1 and r["ci95"][0] <= r["success_rate"] <= r["ci95"][1]
            assert r["seeds"][0] >= 1_000_000                  # held-out scenes, never recorded
            assert r["videos"] == [f"{r['task']}_{r['seeds'][0]}.mp4"]
            video = repo / "outputs" / "rollouts" / name / r["videos"][0]
            frames = iio.imread(video, plugin="pyav")          # 80 decisions, as recorded at 10 fps
            assert frames.shape == (80, 120, 160, 3)
    assert (repo / "plots" / "rollouts.png").stat().st_size > 0


def test_make_results_fills_the_readme_from_the_pipeline(repo, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    before = (copy / "README.md").read_text()
    run(["make", "-o", "install", "results"], copy)          # the environment under test, not a new one
    after = (copy / "README.md").read_text()
    block = after.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    results = json.loads((copy / "metrics" / "eval.json").read_text())["checkpoints"]
    assert f"| craft | {results['craft']['mcq']['overall']['acc']:.3f} [" in block
    assert before.split("<!-- results:start -->")[0] == after.split("<!-- results:start -->")[0]
    rollouts = after.split("<!-- rollouts:start -->")[1].split("<!-- rollouts:end -->")[0]
    crafted = json.loads((copy / "metrics" / "rollout.json").read_text())["craft"]["new_task"]
    assert f"| craft | new task (insertion) | {crafted['successes']}/1 |" in rollouts
