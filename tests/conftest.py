"""Shared fixtures: a real copy of the repository with its data pulled and its pipeline run."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Overrides of params.yaml that make every stage fast; a changed craft value proves the injection works.
TINY = {"train": {"steps": 12, "batch_size": 4, "warmup_steps": 2, "log_freq": 3, "save_freq": 5, "keep_last": 1},
        "preview": {"retention_losses": [0.5]}, "craft": {"lambda_lr": 0.125},
        "policy": {"vla": {"image_size": 24, "patch_size": 12, "width": 64, "vision_width": 64, "layers": 2,
                           "mlp": 128}},
        "pretrain": {"steps": 6, "question_batch": 4, "action_batch": 4, "log_freq": 3, "text_vocab": 400,
                     "action_vocab": 400},
        "cache": {"num_anchors": 20, "batch_size": 8, "shard_size": 8},
        "evaluate": {"frame_every": 20, "n_boot": 200}, "rollout": {"episodes": 1, "videos": 1},
        "grid": {"methods": ["baseline", "replay"], "seeds": [0, 1]}}
# Stage notebooks that are not DVC stages: the collection notebook made the raw data behind data.dvc.
NOT_STAGES = {"00_collect.ipynb"}
PIPELINES = ("dvc.yaml", "grid/dvc.yaml", "full/dvc.yaml", "frontier/dvc.yaml")


def stages(dvcfile: str = "dvc.yaml") -> dict:
    "The stages of a dvc.yaml file: the default experiment's, or another pipeline's (grid/, full/, frontier/)."
    return yaml.safe_load((ROOT / dvcfile).read_text())["stages"]


def stage_command(stage: dict) -> str:
    "A stage's command as one line (DVC takes a string or a list of lines)."
    return " ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"]


def merged(params: dict, overrides: dict) -> dict:
    "params.yaml with `overrides` merged in, section by section."
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in params.items()}
    for section, values in overrides.items():
        out.setdefault(section, {}).update(values)
    return out


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    "Run `cmd` with the project's environment first on PATH (and `env` added); with `check`, fail with its output."
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", **(env or {})}
    result = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    assert not check or result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def copy_repo(dst: Path, params_file: str, overrides: dict) -> Path:
    "A git copy of the working tree (tracked and unignored files) in `dst`, `params_file` merged with `overrides`."
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dst / name)
    params = merged(yaml.safe_load((ROOT / params_file).read_text()), overrides)
    (dst / params_file).write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        run(cmd, dst)
    run(["dvc", "pull", "data.dvc"], dst)   # as `make repro` does: the raw data from the bundled remote
    return dst


@pytest.fixture(scope="session")
def repo(tmp_path_factory) -> Path:
    "A copy of the repository with tiny params, after `dvc repro` (what it printed: `printed(repo)`)."
    dst = copy_repo(tmp_path_factory.mktemp("repo"), "params.yaml", TINY)
    result = run(["dvc", "repro"], dst)
    (dst.parent / "repro.out").write_text(result.stdout + result.stderr)
    return dst


def printed(repo: Path) -> str:
    "What `dvc repro` printed (stdout, then stderr) when the `repo` fixture ran it."
    return (repo.parent / "repro.out").read_text()
