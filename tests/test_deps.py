"""Every stage of the four pipelines lists among its DVC deps each `craft` module its notebook imports, transitively:
a change to any of them makes the stage out of date (the import graph read from the sources, not by hand)."""
import ast
import re

import nbformat
import pytest
from conftest import PIPELINES, ROOT, stage_command, stages

NOTEBOOK = re.compile(r"nbs/pipeline/\S+\.ipynb")


def craft_imports(source: str) -> set[str]:
    "The `craft` modules that Python `source` imports, absolutely (`craft.X`) or relatively (`.X`)."
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").split(".")[0] == "craft"):
            module = (node.module or "").removeprefix("craft").lstrip(".")
            found |= {module.split(".")[0]} if module else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("craft.")}
    return found


def closure(modules: set[str]) -> set[str]:
    "`modules` and every craft module they import, transitively."
    seen, todo = set(), set(modules)
    while todo:
        module = todo.pop()
        if module in seen or not (ROOT / "craft" / f"{module}.py").is_file():
            continue
        seen.add(module)
        todo |= craft_imports((ROOT / "craft" / f"{module}.py").read_text())
    return seen


def notebook_stages():
    "(pipeline, stage name, its notebook, the craft modules its deps list) for every stage that runs a notebook."
    for pipeline in PIPELINES:
        for name, stage in stages(pipeline).items():
            notebook = NOTEBOOK.search(stage_command(stage)).group(0)
            base = (ROOT / pipeline).parent / stage.get("wdir", ".")
            listed = {(base / d).resolve().relative_to(ROOT).as_posix() for d in stage.get("deps", [])
                      if "${" not in d}
            yield pipeline, name, notebook, {p.removeprefix("craft/").removesuffix(".py") for p in listed
                                             if p.startswith("craft/")}


@pytest.mark.parametrize("pipeline, name, notebook, listed", list(notebook_stages()),
                         ids=lambda v: v if isinstance(v, str) and not v.endswith(".ipynb") else "")
def test_a_stage_depends_on_every_craft_module_it_runs(pipeline, name, notebook, listed):
    cells = nbformat.read(ROOT / notebook, as_version=4).cells
    imported = craft_imports("\n".join(c.source for c in cells if c.cell_type == "code"))
    missing = sorted(closure(imported | listed) - listed)
    assert not missing, f"{pipeline} stage {name} ({notebook}) lacks " + ", ".join(f"craft/{m}.py" for m in missing)


# The policies' own modules; everything else is a procedure that reaches a policy through `craft.policy` only.
POLICY_MODULES = {"vla", "configuration_small_vla", "modeling_small_vla", "processor_small_vla", "tokenizers",
                  "pretrain", "pi0_fast", "pi0_fast_compat", "pi0_fast_tokenizers", "full"}
TEACHER_STAGES = {"nbs/pipeline/10_pretrain.ipynb", "nbs/pipeline/15_teacher.ipynb"}    # they build a policy


def procedures() -> list[str]:
    "Every craft module that is not a policy's own."
    return sorted(p.stem for p in (ROOT / "craft").glob("*.py")
                  if not p.stem.startswith("_") and p.stem not in POLICY_MODULES)


@pytest.mark.parametrize("module", procedures())
def test_no_procedure_imports_a_policys_modules(module):
    reached = sorted(closure({module}) & POLICY_MODULES)
    assert not reached, f"craft/{module}.py imports {reached}"


def test_no_stage_but_a_teacher_stage_imports_a_policys_modules():
    used = {}
    for notebook in sorted({n for _, _, n, _ in notebook_stages()} - TEACHER_STAGES):
        cells = nbformat.read(ROOT / notebook, as_version=4).cells
        reached = closure(craft_imports("\n".join(c.source for c in cells if c.cell_type == "code"))) & POLICY_MODULES
        if reached:
            used[notebook] = sorted(reached)
    assert not used, used
