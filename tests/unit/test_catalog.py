"""Each artifact name is defined once: in the catalog (mvcaug/io/artifacts.yaml), which Python reads as
mvcaug.io.catalog.FILES and dvc.yaml through `vars:` as ${files.<key>}. No other file of mvcaug/, tasks/,
flows/ or dvc.yaml spells a name out, and no two entries share one.

Docstrings are prose and not checked, nor are keys of a dict or a subscript equal to a name without a suffix
(the JSON key "cells", timm's "classifier"): a key names a field, not a file. Any other string that merely
equals a name without meaning that file (the LR schedule's checkpoint part "scheduler") says so on its line:
`# catalog-exempt: <why>`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from mvcaug.io.catalog import CATALOG_FILE, FILES, all_names, load_catalog
from mvcaug.data.synthetic_sets import SET_NAMES
from mvcaug.io.digests import PROJECT_ROOT

EXEMPT = "# catalog-exempt:"
NAMES = frozenset(all_names(FILES))
SOURCES = sorted(p for folder in ("mvcaug", "tasks", "flows") for p in (PROJECT_ROOT / folder).rglob("*.py")
                 if p != PROJECT_ROOT / "mvcaug" / "io" / "catalog.py")
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


def spells(text: str, names: frozenset[str] = NAMES) -> str | None:
    """The catalog name `text` spells out, else None: the whole string, one component of a path
    ("plots/metrics"), or a name with a suffix anywhere as a word ("{folder}/manifest.parquet is empty")."""
    if text in names:
        return text
    if "/" in text:
        for part in text.split("/"):
            if part in names:
                return part
    for name in names:
        if "." in name and re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)", text):
            return name
    return None


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that stand alone as statements: docstrings, attribute docstrings."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def keys(tree: ast.AST) -> set[int]:
    """ids of the string constants that are keys: of a dict display ({"cells": 3}) or a subscript (m["cells"])."""
    found = {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys if key is not None}
    return found | {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}


def python_literals(path: Path, names: frozenset[str] = NAMES) -> list[str]:
    """'file:line: name' for every string literal of `path` (f-string pieces included) that spells a name."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source, str(path))
    prose, fields = docstrings(tree), keys(tree)
    files = frozenset(name for name in names if "." in name)  # what a key may not spell either
    found = []
    for node in ast.walk(tree):  # an f-string's literal pieces are Constant nodes inside its JoinedStr
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in prose:
            continue
        name = spells(node.value, files if id(node) in fields else names)
        if name and not any(EXEMPT in line for line in lines[node.lineno - 1:node.end_lineno]):
            found.append(f"{path}:{node.lineno}: {name!r}")
    return found


def entry_paths(entries) -> list[str]:
    """The paths of a dvc.yaml list of deps, outs, metrics or plots: a string, or the key of a one-key mapping."""
    return [str(next(iter(entry))) if isinstance(entry, dict) else str(entry) for entry in entries or []]


def dvc_yaml_paths(document: dict) -> list[str]:
    """Every path a dvc.yaml names (its stages' commands, deps and outputs, its top-level plots), where a name
    could be spelled out; DVC's own words (plots:, template: confusion) are not paths."""
    found = entry_paths(document.get("plots"))
    for stage in (document.get("stages") or {}).values():
        found.append(str(stage.get("cmd", "")))
        for kind in ("deps", "outs", "metrics", "plots"):
            found += entry_paths(stage.get(kind))
    return found


def dvc_yaml_literals(path: Path, names: frozenset[str] = NAMES) -> list[str]:
    """The paths of a dvc.yaml that spell a name outside ${...} (comments aside)."""
    found = []
    for text in dvc_yaml_paths(yaml.safe_load(path.read_text())):
        name = spells(INTERPOLATION.sub("", text), names)
        if name:
            found.append(f"{path.name}: {text!r} spells {name!r}")
    return found


def test_the_catalog_loads_with_unique_plain_names():
    names = all_names(FILES)
    assert len(names) == len(set(names)) and all(name and "/" not in name for name in names)
    assert set(FILES.decisions) == set(SET_NAMES)  # one decisions file per synthetic set


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(PROJECT_ROOT).as_posix())
def test_no_module_spells_out_a_catalog_name(path):
    found = python_literals(path)
    assert not found, f"use mvcaug.io.catalog.FILES instead of the literal: {'; '.join(found)}"


def test_dvc_yaml_spells_out_no_catalog_name_and_reads_the_catalog():
    dvc_yaml = PROJECT_ROOT / "dvc.yaml"
    found = dvc_yaml_literals(dvc_yaml)
    assert not found, f"write ${{files.<key>}} instead: {'; '.join(found)}"
    document = yaml.safe_load(dvc_yaml.read_text())
    assert CATALOG_FILE.relative_to(PROJECT_ROOT).as_posix() in document["vars"]
    catalog = yaml.safe_load(CATALOG_FILE.read_text())
    for expression in INTERPOLATION.findall(dvc_yaml.read_text()):
        if expression.startswith("files."):  # each names an entry (DVC would fail on the first one that does not)
            node = catalog
            for key in expression.split("."):
                node = node[key]
            assert isinstance(node, str), expression


@pytest.mark.parametrize("path", [PROJECT_ROOT / "params.yaml", *sorted((PROJECT_ROOT / "profiles").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_no_params_file_holds_a_files_section(path):
    """dvc.yaml's vars merge the catalog's `files:` beside params.yaml's sections: DVC refuses a key in both."""
    assert "files" not in (yaml.safe_load(path.read_text()) or {})


# --- the checks fail where they should --------------------------------------------------------------------------


def test_a_literal_name_is_found_in_code(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        '"""Reads manifest.parquet: a docstring is prose."""\n'
        'from pathlib import Path\n'
        'A = Path("data") / "manifest.parquet"\n'
        'B = f"{A}/results.json"\n'
        'C = f"{A}/shard-{1}"\n'
        'D = "cells/x"\n'
        'E = f"see {A}/metrics.json for why"\n'
        'F = {"cells": 1, "manifest.parquet": 2}\n'
        'G = "report.md.j2"\n'
        'H = "the real-only classifier"\n'
        'I = F["cells"], F.get("cells")\n'
        'J = F.get("cells")  # catalog-exempt: a key\n'
    )
    found = python_literals(module)
    assert sorted(int(line.split(":")[1]) for line in found) == [3, 4, 5, 6, 7, 8, 11], found


def test_a_literal_name_is_found_in_a_dvc_yaml(tmp_path):
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(
        "# ${paths.model}/loss.csv in a comment is prose\n"
        "stages:\n"
        "  s:\n"
        "    cmd: python -m flows.s\n"
        "    deps:\n"
        "      - ${paths.prepared}/${files.manifest}\n"
        "      - ${paths.filter}/mvc.parquet\n"
        "    metrics:\n"
        "      - ${paths.model}/metrics.json:\n"
        "          cache: false\n"
        "plots:\n"
        "  - ${paths.train}/${files.plots}/${files.confusion}:\n"
        "      template: confusion\n"
        "  - ${paths.train}/plots/curves\n"
    )
    found = dvc_yaml_literals(dvc_yaml)
    assert sorted(line.split(" spells ")[1] for line in found) == ["'metrics.json'", "'mvc.parquet'", "'plots'"], found


def test_a_name_defined_twice_or_an_unknown_entry_is_refused(tmp_path):
    text = CATALOG_FILE.read_text()
    twice = tmp_path / "twice.yaml"
    twice.write_text(text.replace("results: results.json", "results: result.json"))
    with pytest.raises(ValueError, match=r"result\.json defined more than once"):
        load_catalog(twice)
    extra = tmp_path / "extra.yaml"
    extra.write_text(text + "  extra: extra.json\n")
    with pytest.raises(ValueError, match="unknown.*extra"):
        load_catalog(extra)
    path = tmp_path / "path.yaml"
    path.write_text(text.replace("loss: loss.csv", "loss: sub/loss.csv"))
    with pytest.raises(ValueError, match="files.loss"):
        load_catalog(path)
