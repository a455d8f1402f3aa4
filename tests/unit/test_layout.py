"""The layout rule, checked on the code itself: a flow composes tasks, a task does I/O around domain calls, the
domain is pure of orchestration. What two tasks share lives below them, in mvcaug/."""

from __future__ import annotations

import ast
import re
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


# --- file I/O: only in mvcaug/io/ (and the tasks and flows around the domain) --------------------------------------

IO_PACKAGE = PROJECT_ROOT / "mvcaug" / "io"
DOMAIN = sorted(p for p in (PROJECT_ROOT / "mvcaug").rglob("*.py") if IO_PACKAGE not in p.parents)

FILE_IO_ALLOWED = {
    ("mvcaug/reporting/report.py", "jinja2.FileSystemLoader"):
        "the report's own jinja2 templates, package code beside the module (read like an import), not a data file",
}
"""(module, call) pairs of the domain that may touch files, each with the reason; everything else goes to mvcaug/io/."""

IO_FUNCTIONS = {
    "open", "io.open", "sqlite3.connect", "glob.glob", "glob.iglob", "PIL.Image.open", "PIL.ImageFont.truetype",
    "torch.save", "torch.load", "json.load", "json.dump", "pickle.load", "pickle.dump", "jinja2.FileSystemLoader",
    "safetensors.safe_open", "safetensors.torch.load_file", "safetensors.torch.save_file",
    "safetensors.torch.load_model", "safetensors.torch.save_model",
    "huggingface_hub.hf_hub_download", "huggingface_hub.snapshot_download",
    *(f"os.{name}" for name in ("open", "listdir", "scandir", "walk", "remove", "unlink", "makedirs", "mkdir", "rename",
                                "replace", "rmdir", "removedirs", "stat", "lstat", "fsync", "readlink", "symlink",
                                "link", "chmod", "utime", "truncate")),
    *(f"os.path.{name}" for name in ("exists", "lexists", "isfile", "isdir", "islink", "getsize", "getmtime",
                                     "getctime", "samefile")),
    *(f"numpy.{name}" for name in ("load", "save", "savez", "savez_compressed", "loadtxt", "savetxt", "fromfile",
                                   "memmap", "genfromtxt")),
}
"""Functions that touch files, by their full name (whatever the module is imported as)."""
IO_MODULES = ("shutil.", "tempfile.", "pyarrow.parquet.", "pyarrow.csv.", "pandas.read_", "fsspec.")
"""Modules (or name prefixes) every function of which touches files."""
IO_METHODS = {
    "read_text", "read_bytes", "write_text", "write_bytes", "mkdir", "rmdir", "unlink", "touch", "rename", "glob",
    "rglob", "iterdir", "exists", "is_file", "is_dir", "is_symlink", "symlink_to", "hardlink_to", "readlink", "stat",
    "lstat", "chmod", "from_pretrained", "save_pretrained", "save_config", "save_lora_weights", "lora_state_dict",
    "load_lora_weights", "to_parquet", "to_csv", "savefig", "tofile", "truetype",
}
"""Methods that touch files whatever they are called on: pathlib's, diffusers' and transformers' model files, ..."""


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The full dotted name of a called expression (`pq.read_table` -> `pyarrow.parquet.read_table`), or None
    when it is not a name or attribute chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def file_io_calls(path: Path) -> list[tuple[int, str]]:
    """(line, call) for every call in a module that reads or writes files: open(), pathlib's file methods, os,
    shutil, PIL's Image.open and .save to a path, parquet, json.load/dump, safetensors, torch.save/load, diffusers'
    and transformers' from_pretrained/save_pretrained, font files, template folders. An image saved into a
    BytesIO stays in memory and is not one."""
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}
    in_memory: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if (_dotted(node.value.func, aliases) or "").endswith("BytesIO"):
                in_memory |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        method = node.func.attr if isinstance(node.func, ast.Attribute) else None
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
        on_module = isinstance(receiver, ast.Name) and receiver.id in aliases  # `os.replace`, not `path.replace`
        if name in IO_FUNCTIONS or (name and name.startswith(IO_MODULES)):
            found.append((node.lineno, name))
        elif method in IO_METHODS:
            found.append((node.lineno, f".{method}"))
        elif method == "save" and not on_module and not (node.args and isinstance(node.args[0], ast.Name)
                                                         and node.args[0].id in in_memory):
            found.append((node.lineno, ".save"))
        elif method == "open" and not on_module:
            found.append((node.lineno, ".open"))
        elif method == "replace" and not on_module and len(node.args) == 1 and not node.keywords:
            found.append((node.lineno, ".replace"))  # Path.replace(target); str.replace takes two
        elif method == "create_model" and any(k.arg == "pretrained" and not (
                isinstance(k.value, ast.Constant) and k.value.value is False) for k in node.keywords):
            found.append((node.lineno, "timm.create_model(pretrained=...)"))  # timm reads the weights file
    return sorted(found)


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: p.relative_to(PROJECT_ROOT).as_posix())
def test_the_domain_touches_no_file_outside_mvcaug_io(path):
    module = path.relative_to(PROJECT_ROOT).as_posix()
    calls = [(line, call) for line, call in file_io_calls(path) if (module, call) not in FILE_IO_ALLOWED]
    shown = ", ".join(f"line {line}: {call}" for line, call in calls)
    assert not calls, f"{module} reads or writes files ({shown}): move that function into mvcaug/io/"


def test_every_file_io_exception_is_still_needed():
    """An allowlisted call the module no longer makes is a stale entry: drop it."""
    for (module, call), reason in FILE_IO_ALLOWED.items():
        assert reason and call in {found for _, found in file_io_calls(PROJECT_ROOT / module)}, (module, call)


def test_the_file_io_check_finds_what_a_module_reads_and_writes(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import io\nimport shutil\nfrom pathlib import Path\nfrom PIL import Image\nimport pyarrow.parquet as pq\n"
        "import safetensors.torch as st\nfrom diffusers import UNet2DConditionModel\n\n"
        "def f(x, image, model):\n"
        "    Path(x).write_text('a')\n"           # 10
        "    with Image.open(x) as opened:\n"     # 11
        "        pass\n"
        "    image.save(x)\n"                     # 13
        "    buffer = io.BytesIO()\n"
        "    image.save(buffer, 'PNG')\n"         # in memory: not file I/O
        "    table = pq.read_table(x)\n"          # 16
        "    st.save_file({}, x)\n"               # 17
        "    shutil.rmtree(x)\n"                  # 18
        "    UNet2DConditionModel.from_pretrained(x)\n"  # 19
        "    x.replace('a', 'b')\n"               # str.replace: not file I/O
        "    return open(x).read()\n"             # 21
    )
    assert file_io_calls(module) == [
        (10, ".write_text"), (11, "PIL.Image.open"), (13, ".save"), (16, "pyarrow.parquet.read_table"),
        (17, "safetensors.torch.save_file"), (18, "shutil.rmtree"), (19, ".from_pretrained"), (21, "open"),
    ]


# --- domain errors name the missing stage, not the tool that runs it -------------------------------------------------

TOOL_COMMAND = re.compile(r"\bdvc\s+[a-z]")


def error_texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal in a raised exception or in a call of an exception class (`...Error(`,
    `...Exception(`) of a module, f-string parts included."""
    found: dict[int, ast.Constant] = {}  # by node: a raised `...Error(...)` is a Raise and a Call
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            where = node.exc
        elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)) and (
                getattr(node.func, "id", None) or getattr(node.func, "attr", "")).endswith(("Error", "Exception")):
            where = node
        else:
            continue
        found |= {id(text): text for text in ast.walk(where) if isinstance(text, ast.Constant) and isinstance(text.value, str)}
    return sorted((text.lineno, text.value) for text in found.values())


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "mvcaug").rglob("*.py")),
                         ids=lambda p: p.relative_to(PROJECT_ROOT).as_posix())
def test_no_domain_error_names_a_dvc_command(path):
    """The domain says which stage's output is missing (MissingInputError.stage); how to run that stage is the
    command line's to say (flows.cli.error_line)."""
    wrong = [(line, text) for line, text in error_texts(path) if TOOL_COMMAND.search(text)]
    assert not wrong, f"{path.relative_to(PROJECT_ROOT)}: errors name a dvc command: {wrong}"


def test_the_error_check_finds_a_dvc_command_in_a_message(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f(path):\n    if path:\n        raise MissingInputError(f'{path}: missing; run the generate "
                      "stage first (dvc repro generate)')\n    return ValueError('fine') or KeyError('dvc repro x')\n")
    assert [line for line, text in error_texts(module) if TOOL_COMMAND.search(text)] == [3, 4]


# --- public names: every module says what it offers, and others import only that -----------------------------------

PROJECT_MODULES = sorted(p for package in ("mvcaug", "tasks", "flows") for p in (PROJECT_ROOT / package).rglob("*.py")
                         if p.name != "__init__.py")
IMPORTERS = sorted(p for folder in ("mvcaug", "tasks", "flows", "tests", "benchmarks", "sweeps", "tools")
                   for p in (PROJECT_ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def declared_public(path: Path) -> list[str] | None:
    """The module's literal `__all__`, or None when it has none."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list) and all(isinstance(name, str) for name in value), f"{path}: __all__"
            return value
    return None


def top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def imports_outside_all(importer: Path, public: dict[str, list[str]]) -> list[str]:
    """`from <project module> import <name>` where <name> is neither a submodule, private, nor in its __all__."""
    wrong = []
    for node in ast.walk(ast.parse(importer.read_text(), str(importer))):
        if isinstance(node, ast.ImportFrom) and node.module in public and not node.level:
            for alias in node.names:
                if (not alias.name.startswith("_") and f"{node.module}.{alias.name}" not in public
                        and alias.name not in public[node.module]):
                    wrong.append(f"line {node.lineno}: {node.module}.{alias.name}")
    return wrong


@pytest.mark.parametrize("path", PROJECT_MODULES, ids=lambda p: p.relative_to(PROJECT_ROOT).as_posix())
def test_every_module_declares_its_public_names(path):
    public = declared_public(path)
    assert public is not None, f"{path.relative_to(PROJECT_ROOT)}: no __all__; list the names other modules use"
    undefined = sorted(set(public) - top_level_names(path))
    assert not undefined, f"{path.relative_to(PROJECT_ROOT)}: __all__ names {undefined}, which it does not define"
    assert len(public) == len(set(public))


def test_no_file_imports_a_name_a_module_keeps_to_itself():
    public = {module_name(p): declared_public(p) or [] for p in PROJECT_MODULES}
    public.update({module_name(p): [] for package in ("mvcaug", "tasks", "flows")
                   for p in (PROJECT_ROOT / package).rglob("__init__.py")})
    wrong = {importer.relative_to(PROJECT_ROOT).as_posix(): found for importer in IMPORTERS
             if (found := imports_outside_all(importer, public))}
    assert not wrong, f"imports of names missing from their module's __all__ (add them there): {wrong}"


def test_the_public_name_check_finds_an_import_outside_all(tmp_path):
    importer = tmp_path / "user.py"
    importer.write_text("from mvcaug.judging.stats import paired_gain, helper, _private\nfrom mvcaug.judging import stats\n")
    public = {"mvcaug.judging.stats": ["paired_gain"], "mvcaug.judging": []}
    assert imports_outside_all(importer, public) == ["line 1: mvcaug.judging.stats.helper"]
