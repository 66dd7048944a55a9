"""The DVC pipeline, run for real (dvc → papermill → craft) on a temporary copy under tiny parameters."""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import nbformat
import pytest
import torch
import yaml
from conftest import BIN, NOT_STAGES, PIPELINES, ROOT, TINY, printed, run, stage_command, stages

# What a user produced, which a failed or killed stage must leave as it was.
KEPT = ["plots/constraint_preview.png", "models/craft/final/model.safetensors", "metrics/train/craft.json",
        "dvclive/train/craft/plots/metrics/train/loss.tsv", "metrics/eval.json"]


def test_every_pipeline_notebook_is_a_stage():
    commands = " ".join(stage_command(s) for f in PIPELINES for s in stages(f).values())
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


def test_the_pipeline_shows_each_stage_and_no_chatter(repo):
    out = printed(repo)
    for name in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]:       # one line per stage that ran
        assert re.search(rf"^stage {re.escape(name)} done in \d+ s ", out, re.MULTILINE), f"{name}:\n{out}"
    chatter = ["Loading weights from local directory", "Svt[", "[mp4 @", "[libx264 @", "Passed unknown parameter",
               "without encryption", "Map:", "Traceback"]
    assert [line for line in out.splitlines() if any(c in line for c in chatter)] == []


def test_executed_notebooks_used_the_tiny_params(repo):
    config = json.loads((repo / "outputs" / "preview" / "craft_config.json").read_text())
    assert config["lambda_lr"] == TINY["craft"]["lambda_lr"]
    nb = nbformat.read(repo / "outputs" / "notebooks" / "05_preview.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.parametrize("section, key, value, message", [
    ("craft", "lambda_max", 0.1, "craft.lambda_max = 0.1 is not allowed: must be ≥ initial_lambda (1.0)"),
    ("pretrain", "question_share", 2, "pretrain.question_share = 2.0 is not allowed: must be in [0, 1]"),
    ("policy", "chunk", 4, "policy.chunk = 4 is not allowed: is not a SmallVLAConfig key; did you mean `chunk_size`?"),
])
def test_bad_params_stop_the_stage_with_the_field_named(repo, tmp_path, section, key, value, message):
    bad = tmp_path / "bad"
    shutil.copytree(repo, bad)
    params = yaml.safe_load((bad / "params.yaml").read_text())
    params[section][key] = value
    (bad / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    kept = {path: (bad / path).read_bytes() for path in KEPT}
    result = run(["dvc", "repro"], bad, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("stage ")]
    assert len(failures) == 1 and " failed: ConfigError: " in failures[0] and message in failures[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr       # the traceback stays in the executed notebook
    assert "Passed unknown parameter" not in result.stderr and "without encryption" not in result.stderr
    assert {path: (bad / path).read_bytes() for path in KEPT} == kept   # a failed stage destroys nothing


def test_a_misspelt_train_key_is_named(repo, tmp_path):
    typo = tmp_path / "typo"
    shutil.copytree(repo, typo)
    params = yaml.safe_load((typo / "params.yaml").read_text())
    params["train"]["setps"] = params["train"].pop("steps")
    (typo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro", "preview"], typo, check=False)
    assert result.returncode != 0
    failures = [line for line in result.stderr.splitlines() if line.startswith("stage ")]
    assert len(failures) == 1 and "ConfigError: train.setps = " in failures[0], result.stderr
    assert "is not a TrainConfig key; did you mean `steps`?" in failures[0]


def files(folder) -> dict:
    "Every file under `folder` but git's, DVC's own and scratch/, with its bytes' digest."
    import hashlib

    skip = ("scratch/", ".git/", ".dvc/")
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.relative_to(folder).as_posix().startswith(skip)}


def test_stage_notebooks_opened_by_hand_take_params_yaml_and_change_nothing_versioned(repo, tmp_path):
    "Run top to bottom outside DVC, as from JupyterLab: preview and train with params.yaml's values, into scratch/."
    copy = tmp_path / "by_hand"
    shutil.copytree(repo, copy, symlinks=True)
    before = files(copy)
    for notebook in ("05_preview", "30_train"):
        run(["papermill", f"{notebook}.ipynb", str(tmp_path / f"{notebook}.ipynb"), "--no-progress-bar"],
            copy / "nbs" / "pipeline")
    assert files(copy) == before
    scratch = copy / "scratch"
    assert sorted(p.name for p in scratch.iterdir()) == ["preview", "train@baseline"]
    assert (scratch / "preview" / "plots" / "constraint_preview.png").is_file()
    final = scratch / "train@baseline" / "models" / "baseline" / "final"
    assert json.loads((final / "train_config.json").read_text())["train"]["steps"] == TINY["train"]["steps"]
    assert (scratch / "train@baseline" / "models" / "teacher").is_symlink()     # read from the repository


def test_make_experiments_fits_a_screen_and_shows_what_changed(repo, tmp_path):
    "After `dvc exp run -S craft.initial_lambda=…`, the Makefile's `experiments` table: the knob, the moved metrics."
    exp = tmp_path / "exp"
    shutil.copytree(repo, exp, symlinks=True)
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ran"]):
        run(cmd, exp)
    ran = run(["dvc", "exp", "run", "-S", "craft.initial_lambda=10", "eval"], exp)   # retrains craft, scores it
    assert "full/" not in ran.stdout + ran.stderr, ran.stderr                  # the pipelines never run stay quiet
    command = [line for line in run(["make", "-n", "experiments"], ROOT).stdout.splitlines()
               if line.startswith("dvc exp show")]
    table = run(["bash", "-c", command[0]], exp).stdout.splitlines()
    header = [c.strip().split(":")[-1] for c in table[0].strip("|").split("|")]     # the first of a file: file:name
    moved = [c for c in header if c.startswith("craft.") and c != "craft.initial_lambda"]   # at 5 digits, as shown
    assert len(header) <= 20 and "craft.initial_lambda" in header and moved, header
    assert not any("/" in c or c in ("data", "models") or "seconds" in c for c in header), header


def test_a_craft_knob_retrains_craft_only(repo, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(repo, changed)
    params = yaml.safe_load((changed / "params.yaml").read_text())
    params["craft"]["lambda_lr"] = 0.25
    (changed / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    baseline = (changed / "models" / "baseline" / "final" / "model.safetensors").read_bytes()
    out = run(["dvc", "repro", "train@baseline", "train@craft"], changed).stdout
    assert "Stage 'train@baseline' didn't change, skipping" in out and "Running stage 'train@craft'" in out, out
    assert (changed / "models" / "baseline" / "final" / "model.safetensors").read_bytes() == baseline
    run_json = json.loads((changed / "models" / "craft" / "run.json").read_text())
    assert run_json["craft"]["lambda_lr"] == 0.25


def test_a_killed_training_resumes_when_the_pipeline_runs_again(repo, tmp_path):
    killed = tmp_path / "killed"
    shutil.copytree(repo, killed)
    params = yaml.safe_load((killed / "params.yaml").read_text())
    params["train"].update(steps=300, save_freq=10, log_freq=10, keep_last=1)
    (killed / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    kept = {path: (killed / path).read_bytes() for path in KEPT if "preview" not in path}   # preview completes
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    partial = killed / "models" / "craft.partial"
    with subprocess.Popen(["dvc", "repro", "train@craft"], cwd=killed, env=env, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as first:
        deadline = time.time() + 600
        while not (partial / "step_000020" / "craft_state.pt").exists() and first.poll() is None:
            assert time.time() < deadline, "the training never reached step 20"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)                            # kill -9 the whole run mid-training
    assert first.returncode != 0, "the run ended before it could be killed: give it more steps"
    assert {path: (killed / path).read_bytes() for path in kept} == kept   # the previous results are whole
    second = run(["dvc", "repro", "train@craft"], killed)
    resumed = re.search(r"resuming the interrupted run from \S*step_(\d+)", second.stdout + second.stderr)
    assert resumed and int(resumed[1]) >= 20, second.stdout + second.stderr
    assert not partial.exists()
    state = torch.load(killed / "models" / "craft" / "final" / "craft_state.pt", weights_only=True)
    assert state["step"] == 300
    steps = [int(line.split("\t")[0]) for line in (killed / "dvclive" / "train" / "craft" / "plots" / "metrics" /
                                                     "train" / "loss.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(10, 301, 10))                           # every logged step once: the curve continues


def test_dvc_plots_render_offline(repo):
    from craft.project import write_offline_plots_template

    write_offline_plots_template(repo)
    shown = run(["dvc", "plots", "show"], repo)
    assert "failed to load" not in shown.stdout + shown.stderr, shown.stderr  # full/, never run, stays quiet
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "vegaEmbed" in page and "cdn.jsdelivr" not in page
    assert "constraint_preview" in page and "teacher_mcq" in page and "question_loss" in page
    finetune = page[page.index('id = "finetune_loss"'):].split("</script>")[0]     # baseline and craft overlaid
    assert "baseline/plots/metrics/train/loss.tsv" in finetune and "craft/plots/metrics/train/loss.tsv" in finetune
    assert "craft_lambda" in page and "baseline/plots/metrics/craft/lambda.tsv" not in page   # λ for craft only
