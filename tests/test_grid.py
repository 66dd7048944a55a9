"""`make grid` on the tiny pipeline: every method × seed trained, evaluated and aggregated by DVC, then the README."""
import json

import pytest
from conftest import TINY, run
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def grid(repo):
    "The tiny repository after `make grid` (the install step skipped: the test's environment is the project's)."
    run(["make", "-o", "install", "grid"], repo)
    return repo


def test_every_run_is_trained_and_evaluated(grid):
    for method in TINY["grid"]["methods"]:
        for seed in TINY["grid"]["seeds"]:
            report = json.loads((grid / "grid" / "metrics" / f"{method}-{seed}.json").read_text())
            assert (report["method"], report["seed"]) == (method, seed)
            assert report["checkpoint"]["training"]["steps"] == TINY["train"]["steps"]
            assert (grid / "grid" / "runs" / f"{method}-{seed}" / "model" / "final" / "model.safetensors").exists()
    first, second = (load_file(grid / "grid" / "runs" / f"baseline-{s}" / "model" / "final" / "model.safetensors")
                     for s in TINY["grid"]["seeds"])
    assert any(not (first[k] == second[k]).all() for k in first), "the seed must change the run"
    assert "up to date" in run(["dvc", "status", "grid/dvc.yaml"], grid).stdout


def test_results_aggregate_the_seeds(grid):
    results = json.loads((grid / "grid" / "results.json").read_text())
    assert list(results["methods"]) == TINY["grid"]["methods"]
    for method, summary in results["methods"].items():
        acc = [json.loads((grid / "grid" / "metrics" / f"{method}-{s}.json").read_text())
               ["checkpoint"]["mcq"]["overall"]["acc"] for s in TINY["grid"]["seeds"]]
        half = 12.7062047 * abs(acc[0] - acc[1]) / 2        # t(0.975, 1) · s/√2 with s = |a − b|/√2
        assert summary["n"] == 2
        assert abs(summary["mcq_acc"]["mean"] - sum(acc) / 2) < 1e-12
        assert abs(summary["mcq_acc"]["high"] - summary["mcq_acc"]["mean"] - half) < 1e-6
    assert set(results["pareto"]) <= set(TINY["grid"]["methods"]) and results["pareto"]
    assert (grid / "plots" / "grid_tradeoff.png").stat().st_size > 10_000


def test_readme_gets_the_grid_table(grid):
    readme = (grid / "README.md").read_text()
    block = readme.split("<!-- grid:start -->")[1].split("<!-- grid:end -->")[0]
    for method in TINY["grid"]["methods"]:
        assert f"| {method} | 2 |" in block or f"| **{method}** | 2 |" in block
    metrics = run(["dvc", "metrics", "show", "--md"], grid).stdout
    assert "metrics/summary.json" in metrics and "grid/" not in metrics   # the default experiment's, readable
