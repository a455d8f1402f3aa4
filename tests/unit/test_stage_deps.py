"""Every stage's dvc.yaml deps cover the code its flow runs, so a code change reruns the stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mvcaug.io.digests import PROJECT_ROOT, import_closure

STAGES = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def code_of(stage: str) -> list[str]:
    """The project files the stage's flow imports, transitively (lazy imports too), __init__ files aside."""
    files = import_closure([f"flows.{stage}"])
    return [f.relative_to(PROJECT_ROOT).as_posix() for f in files if f.name != "__init__.py"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_cover_the_import_closure_of_the_stage_flow(stage):
    assert STAGES[stage]["cmd"] == f"exec python -m flows.{stage}"  # the naming chain: stage -> flows/<stage>.py
    deps = [str(d) for d in STAGES[stage]["deps"]]
    missing = [path for path in code_of(stage) if not covered(path, deps)]
    assert not missing, f"dvc.yaml: stage '{stage}' runs {', '.join(missing)} but does not list it in deps"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_list_no_code_the_stage_does_not_run(stage):
    code = set(code_of(stage))
    listed = [d for d in STAGES[stage]["deps"] if str(d).endswith(".py")]
    extra = [d for d in listed if d not in code]
    assert not extra, f"dvc.yaml: stage '{stage}' lists {', '.join(extra)}, which its flow never imports"
    assert all((PROJECT_ROOT / d).is_file() for d in listed)


READS = {"mvcaug/io/catalog.py": "mvcaug/io/artifacts.yaml", "mvcaug/reporting/report.py": "mvcaug/reporting/templates"}
"""Files that code reads as part of itself: the artifact names, the report's templates."""


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_cover_the_files_the_stage_code_reads(stage):
    """A renamed artifact reruns every stage that writes or reads it, even one whose name appears in no path of
    dvc.yaml (DVC tracks its vars: only through the paths they resolve)."""
    deps = [str(d) for d in STAGES[stage]["deps"]]
    missing = [READS[path] for path in code_of(stage) if path in READS and not covered(READS[path], deps)]
    assert not missing, f"dvc.yaml: stage '{stage}' reads {', '.join(missing)} but does not list it in deps"
    assert all((PROJECT_ROOT / read).exists() for read in READS.values())


def test_the_closure_sees_a_module_imported_inside_a_function(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "mvcaug").mkdir()
    (tmp_path / "tasks").mkdir()
    (tmp_path / "flows" / "demo.py").write_text("def run():\n    from mvcaug.late import x\n")
    (tmp_path / "mvcaug" / "late.py").write_text("import mvcaug.later\nx = 1\n")
    (tmp_path / "mvcaug" / "later.py").write_text("")
    files = {p.relative_to(tmp_path).as_posix() for p in import_closure(["flows.demo"], Path(tmp_path))}
    assert files == {"flows/demo.py", "mvcaug/late.py", "mvcaug/later.py"}
