"""The DVC pipeline, run for real (dvc → papermill → craft) on a temporary copy under tiny parameters."""
import json
import shutil

import nbformat
import pytest
import yaml
from conftest import NOT_STAGES, ROOT, TINY, run


def stages(dvcfile: str = "dvc.yaml") -> dict:
    "The stages of a dvc.yaml file: the default experiment's, or the grid's (grid/dvc.yaml)."
    return yaml.safe_load((ROOT / dvcfile).read_text())["stages"]


def test_every_pipeline_notebook_is_a_stage():
    every = [*stages().values(), *stages("grid/dvc.yaml").values(), *stages("full/dvc.yaml").values()]
    commands = " ".join(" ".join(s["cmd"]) if isinstance(s["cmd"], list) else s["cmd"] for s in every)
    notebooks = sorted(p.name for p in (ROOT / "nbs" / "pipeline").glob("*.ipynb") if p.name not in NOT_STAGES)
    assert notebooks, "nbs/pipeline holds no stage notebook"
    assert [n for n in notebooks if f"nbs/pipeline/{n}" not in commands] == []


def test_stage_notebooks_have_a_parameters_cell():
    for path in (ROOT / "nbs" / "pipeline").glob("*.ipynb"):
        tags = [c.metadata.get("tags", []) for c in nbformat.read(path, as_version=4).cells]
        assert sum("parameters" in t for t in tags) == 1, f"{path.name}: exactly one cell tagged 'parameters'"


def test_repro_produces_every_output(repo):
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]      # paths resolved, matrices expanded
    for name in stages():
        assert any(n == name or n.startswith(f"{name}@") for n in locked), f"stage {name} never ran"
    for name, stage in locked.items():
        for out in stage.get("outs", []):
            assert (repo / out["path"]).exists(), f"stage {name} did not write {out['path']}"
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], repo).stdout


def test_executed_notebooks_used_the_tiny_params(repo):
    config = json.loads((repo / "outputs" / "preview" / "craft_config.json").read_text())
    assert config["lambda_lr"] == TINY["craft"]["lambda_lr"]
    nb = nbformat.read(repo / "outputs" / "notebooks" / "05_preview.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.parametrize("section, key, value, message", [
    ("craft", "lambda_max", 0.1, "craft.lambda_max = 0.1 is not allowed: must be ≥ initial_lambda (1.0)"),
    ("pretrain", "question_weight", 2, "pretrain.question_weight = 2.0 is not allowed: must be in [0, 1]"),
    ("policy", "chunk", 4, "policy.chunk = 4 is not allowed: is not a SmallVLAConfig key; did you mean `chunk_size`?"),
])
def test_bad_params_stop_the_stage_with_the_field_named(repo, tmp_path, section, key, value, message):
    bad = tmp_path / "bad"
    shutil.copytree(repo, bad)
    params = yaml.safe_load((bad / "params.yaml").read_text())
    params[section][key] = value
    (bad / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], bad, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_dvc_plots_render_offline(repo):
    from craft.project import write_offline_plots_template

    write_offline_plots_template(repo)
    run(["dvc", "plots", "show"], repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "vegaEmbed" in page and "cdn.jsdelivr" not in page
    assert "constraint_preview" in page and "teacher_mcq" in page and "question_loss" in page
    finetune = page[page.index('id = "finetune_loss"'):].split("</script>")[0]     # baseline and craft overlaid
    assert "baseline/plots/metrics/train/loss.tsv" in finetune and "craft/plots/metrics/train/loss.tsv" in finetune
    assert "craft_lambda" in page and "baseline/plots/metrics/craft/lambda.tsv" not in page   # λ for craft only
