"""Every stage of the four pipelines lists among its DVC deps each `craft` module its notebook imports, transitively:
a change to any of them makes the stage out of date (the import graph read from the sources, not by hand). And the
seam holds: no procedure and no stage but a teacher's reaches a policy's own modules (`craft/policies/`)."""
import ast
import re

import nbformat
import pytest
from conftest import PIPELINES, ROOT, stage_command, stages

NOTEBOOK = re.compile(r"nbs/pipeline/\S+\.ipynb")


def module_file(module: str):
    "The file of craft module `module` (dotted, below `craft`), or None when it is not a module."
    path = ROOT / "craft" / (module.replace(".", "/") + ".py")
    return path if path.is_file() else None


def craft_imports(source: str, package: str = "") -> set[str]:
    "The craft modules (dotted, below `craft`) that Python `source` of a module in `package` imports."
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = ".".join(parts[:len(parts) - node.level + 1])
            elif (node.module or "").split(".")[0] == "craft":
                base = ""
            else:
                continue
            named = (node.module or "").removeprefix("craft").lstrip(".") if not node.level else node.module or ""
            target = ".".join(p for p in (base, named) if p)
            found |= ({target} if module_file(target) else set()) | {
                f"{target}.{a.name}".lstrip(".") for a in node.names if module_file(f"{target}.{a.name}".lstrip("."))}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("craft.") for a in node.names if a.name.startswith("craft.")}
    return found


def closure(modules: set[str]) -> set[str]:
    "`modules` and every craft module they import, transitively."
    seen, todo = set(), set(modules)
    while todo:
        module = todo.pop()
        if module in seen or not module_file(module):
            continue
        seen.add(module)
        todo |= craft_imports(module_file(module).read_text(), module.rpartition(".")[0])
    return seen


def notebook_stages():
    "(pipeline, stage name, its notebook, the craft modules its deps list) for every stage that runs a notebook."
    for pipeline in PIPELINES:
        for name, stage in stages(pipeline).items():
            notebook = NOTEBOOK.search(stage_command(stage)).group(0)
            base = (ROOT / pipeline).parent / stage.get("wdir", ".")
            listed = {(base / d).resolve().relative_to(ROOT).as_posix() for d in stage.get("deps", [])
                      if "${" not in d}
            yield pipeline, name, notebook, {p.removeprefix("craft/").removesuffix(".py").replace("/", ".")
                                             for p in listed if p.startswith("craft/")}


def notebook_imports(notebook: str) -> set[str]:
    "The craft modules a notebook's code cells import."
    cells = nbformat.read(ROOT / notebook, as_version=4).cells
    return craft_imports("\n".join(c.source for c in cells if c.cell_type == "code"))


def test_the_import_graph_is_read_whole():
    "Relative imports at every depth resolve to modules: the closures below see the policies' own imports."
    assert {"policy", "config", "policies.small_vla.core"} <= closure({"policies.small_vla.modeling_small_vla"})
    assert "policies.pi0_fast.compat" in closure({"policies.pi0_fast.teacher"})


@pytest.mark.parametrize("pipeline, name, notebook, listed", list(notebook_stages()),
                         ids=lambda v: v if isinstance(v, str) and not v.endswith(".ipynb") else "")
def test_a_stage_depends_on_every_craft_module_it_runs(pipeline, name, notebook, listed):
    missing = sorted(closure(notebook_imports(notebook) | listed) - listed)
    assert not missing, f"{pipeline} stage {name} ({notebook}) lacks " + ", ".join(
        f"craft/{m.replace('.', '/')}.py" for m in missing)


TEACHER_STAGES = {"nbs/pipeline/10_pretrain.ipynb", "nbs/pipeline/15_teacher.ipynb"}    # they build a policy


def is_policys(module: str) -> bool:
    "Whether `module` is a policy's own (in craft/policies/)."
    return module.startswith("policies.")


def procedures() -> list[str]:
    "Every craft module that is not a policy's own."
    return sorted(p.stem for p in (ROOT / "craft").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("module", procedures())
def test_no_procedure_imports_a_policys_modules(module):
    reached = sorted(filter(is_policys, closure({module})))
    assert not reached, f"craft/{module}.py imports {reached}"


def test_no_stage_but_a_teacher_stage_imports_a_policys_modules():
    used = {}
    for notebook in sorted({n for _, _, n, _ in notebook_stages()} - TEACHER_STAGES):
        reached = sorted(filter(is_policys, closure(notebook_imports(notebook))))
        if reached:
            used[notebook] = reached
    assert not used, used
