"""Content digests: of files, of JSON-able settings, and of the code that computes a result.

Every cached or persisted result (caption and embedding cache entries, generated shards, classifier
cells, fine-tuning checkpoints) is keyed by everything it was made from, its code included: a result
whose code changed is recomputed, never served stale. `code_digest` hashes the source of the modules a
result depends on (their import closure within this project, found by reading the imports, lazy
ones included) and the versions of the libraries that compute it. Sources are hashed as their syntax
tree, so an edited comment or blank line keeps the results; a changed expression does not.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PROJECT_ROOT", "PROJECT_PACKAGES", "file_sha256", "digest_files", "json_digest", "import_closure",
    "library_versions", "code_digest"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the project's packages (a workspace copy runs its own)."""
PROJECT_PACKAGES = ("mvcaug", "flows", "tasks")
"""Top-level packages whose modules count as the project's code."""
BLOCK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 of one file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_files(paths: Iterable[str | Path]) -> str:
    """sha256 over the names and bytes of files, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def json_digest(payload: Any) -> str:
    """sha256 of the canonical JSON of settings (sorted keys; tuples as lists, other values as str)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def module_file(name: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The source file of a project module (`mvcaug.judging.train` -> mvcaug/judging/train.py), or None."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path = PROJECT_ROOT) -> set[Path]:
    """The project modules one source file imports, at module level or inside functions."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports pkg/mod.py when mod is a module, else pkg itself
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(file for file in (module_file(name, root) for name in names) if file is not None)
    return found


def import_closure(entries: Iterable[str], root: Path = PROJECT_ROOT) -> list[Path]:
    """The source files of `entries` (module names) and of every project module they import, transitively."""
    todo = []
    for name in entries:
        file = module_file(name, root)
        if file is None:
            raise ValueError(f"{name}: not a module of {', '.join(PROJECT_PACKAGES)} under {root}")
        todo.append(file)
    seen: set[Path] = set()
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo.extend(imported_modules(file, root) - seen)
    return sorted(seen)


def source_digest(files: Iterable[Path], root: Path = PROJECT_ROOT) -> str:
    """sha256 over each file's path and syntax tree (comments and layout do not count)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(ast.dump(ast.parse(file.read_text(), str(file))).encode())
    return digest.hexdigest()


def library_versions(libraries: Iterable[str]) -> dict[str, str]:
    """Installed distribution versions by name ("absent" for one that is not installed)."""
    versions = {}
    for name in libraries:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def tree_signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every source file of the project's packages: cheap to take, and it changes
    whenever a source file does, so a memoised digest is never served for edited code."""
    return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                        for package in PROJECT_PACKAGES for p in (root / package).rglob("*.py")))


@functools.lru_cache(maxsize=64)
def _code_digest(entries: tuple[str, ...], libraries: tuple[str, ...], root: Path,
                 signature: tuple[tuple[str, int, int], ...]) -> str:
    return json_digest({"source": source_digest(import_closure(entries, root), root),
                        "libraries": library_versions(libraries)})


def code_digest(entries: Iterable[str], libraries: Iterable[str] = (), root: Path = PROJECT_ROOT) -> str:
    """A digest of the code that computes a result: the import closure of `entries` (module names such
    as "mvcaug.method.generate") within the project, plus the versions of `libraries` (distribution names)."""
    root = Path(root)
    return _code_digest(tuple(sorted(set(entries))), tuple(sorted(set(libraries))), root, tree_signature(root))
