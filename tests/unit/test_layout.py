"""The layout rule, checked on the code itself: a flow composes tasks, a task does I/O around domain calls, the
domain is pure of orchestration. What two tasks share lives below them, in mvcaug/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mvcaug.io.digests import PROJECT_ROOT


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "tasks").glob("*.py")), ids=lambda p: p.name)
def test_no_task_imports_a_task_or_a_flow(path):
    wrong = sorted(m for m in imported_modules(path) if m.split(".")[0] in ("tasks", "flows"))
    assert not wrong, f"tasks/{path.name} imports {', '.join(wrong)}: move what they share into mvcaug/"


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "mvcaug").rglob("*.py")),
                         ids=lambda p: p.relative_to(PROJECT_ROOT).as_posix())
def test_the_domain_imports_no_task_flow_or_orchestrator(path):
    wrong = sorted(m for m in imported_modules(path) if m.split(".")[0] in ("tasks", "flows", "prefect", "dvc"))
    assert not wrong, f"{path.relative_to(PROJECT_ROOT)} imports {', '.join(wrong)}: the domain is pure of orchestration"


def test_the_checks_see_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tasks.train import plan\n    import prefect\n")
    assert imported_modules(module) == {"tasks.train", "prefect"}
