"""The eval and plots stages on the tiny pipeline, and the README results block filled from their output."""
import json
import shutil

from conftest import run


def test_eval_compares_every_checkpoint(repo):
    results = json.loads((repo / "metrics" / "eval.json").read_text())["checkpoints"]
    assert list(results) == ["teacher", "baseline", "craft"]
    assert results["teacher"]["retention"] == 1.0 and results["teacher"]["vs_teacher"]["diff"] == 0.0
    assert results["teacher"]["training"] is None and results["craft"]["training"]["steps"] > 0
    for c in results.values():
        overall = c["mcq"]["overall"]
        assert overall["acc_ci"][0] <= overall["acc"] <= overall["acc_ci"][1]
        for task in ("old_task", "new_task"):
            assert c[task]["action_token_loss"] > 0 and c[task]["action_mse"] >= 0


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
