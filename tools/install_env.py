"""Install requirements into the virtual environment that runs this script: with uv where it can be had, else pip.

    .venv/bin/python tools/install_env.py -e .          (what `make setup` runs; `-e '.[test]'` for `make setup-test`)

Why: pip unpacks and byte-compiles torch's CUDA build (5.5 GB in the venv) on one core, about 90 s of the 2-core
machine's set-up; uv unpacks and compiles on every core, and links files from its cache. uv reads none of pip's
configuration, so the places pip is set up to install from (`pip config list`: pip.conf files and PIP_* variables,
e.g. a mirror, a local index or wheel folder, a constraints file, a CA bundle) are handed to it: the same packages
come from the same places. uv picks the best version across all indexes, as pip does. Where uv cannot be installed
or fails, pip does the install, as before.
"""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["UV_VERSION", "install", "main", "pip_settings", "uv_arguments"]

log = logging.getLogger("tools.install_env")
UV_VERSION = "0.13.9"
# pip's options that say where packages come from (or which versions are allowed), as uv spells them
SOURCE_OPTIONS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
                  "constraint": "--constraint"}
# later wins: pip's command section overrides [global], and its PIP_* variables override every file
PRECEDENCE = ("global", "install", ":env:")


def pip_settings(listing: str) -> dict[str, list[str]]:
    """`pip config list` output (lines `section.option='value'`) as option -> values, the way pip applies them:
    an install-section value over a global one, a PIP_* variable over both; a value of several words is a list."""
    found: dict[str, dict[str, list[str]]] = {}
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        section, dot, option = key.rpartition(".")
        if not sep or not dot or section not in PRECEDENCE:
            continue
        found.setdefault(option, {})[section] = str(ast.literal_eval(value)).split()  # pip writes repr(value)
    return {option: next(by_section[s] for s in reversed(PRECEDENCE) if s in by_section)
            for option, by_section in found.items()}


def uv_arguments(settings: dict[str, list[str]]) -> list[str]:
    """uv pip install's arguments for pip's settings: the same sources and constraints, pip's choice of the best
    version across indexes, and byte-compiled files (as pip writes them: without them every stage's first import
    of torch compiles it again where PYTHONDONTWRITEBYTECODE is set)."""
    arguments = ["--index-strategy", "unsafe-best-match", "--compile-bytecode"]
    if settings.get("no-index", ["0"])[0].lower() in ("1", "true", "yes", "on"):
        arguments.append("--no-index")
    for option, flag in SOURCE_OPTIONS.items():
        for value in settings.get(option, []):
            arguments += [flag, value]
    return arguments


def uv_environment(settings: dict[str, list[str]]) -> dict[str, str]:
    """The environment for uv: pip's CA bundle (a proxy's own certificate authority) and timeout, where set."""
    env = dict(os.environ)
    if settings.get("cert"):
        env.setdefault("SSL_CERT_FILE", settings["cert"][0])
    if settings.get("default-timeout"):
        env.setdefault("UV_HTTP_TIMEOUT", settings["default-timeout"][0])
    return env


def pip(python: Path, *arguments: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    """pip of the environment of `python`; its output captured, or shown (the install itself)."""
    return subprocess.run([str(python), "-m", "pip", *arguments], capture_output=capture, text=True)


def install_uv(python: Path) -> Path | None:
    """uv in the environment of `python` (pip installs it, pinned, if it is not there); None where pip cannot."""
    uv = python.parent / "uv"
    if uv.is_file():
        return uv
    result = pip(python, "install", "-q", f"uv=={UV_VERSION}")
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["pip said nothing"])[-1]
        log.warning("uv could not be installed (%s): pip installs instead", last_line)
        return None
    return uv


def install(python: Path, requirements: list[str], uv: Path | None = None) -> str:
    """Install `requirements` (pip install's arguments) into the environment of `python` with `uv` (by default the
    environment's own, installed first if need be), or with pip where uv cannot be had or fails; says which did."""
    uv = uv or install_uv(python)
    if uv is not None:
        listing = pip(python, "config", "list")
        settings = pip_settings(listing.stdout if listing.returncode == 0 else "")
        command = [str(uv), "pip", "install", "--quiet", "--python", str(python), *uv_arguments(settings),
                   *requirements]
        if subprocess.run(command, env=uv_environment(settings)).returncode == 0:
            return "uv"
        log.warning("uv pip install failed: pip installs instead")
    for arguments in (["install", "-q", "--upgrade", "pip"], ["install", "-q", *requirements]):
        result = pip(python, *arguments, capture=False)
        if result.returncode != 0:
            raise SystemExit(result.returncode)
    return "pip"


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    requirements = sys.argv[1:] if argv is None else argv
    if not requirements:
        raise SystemExit("usage: python tools/install_env.py <pip install arguments>, e.g. -e .")
    # the venv's own interpreter path (not its resolved target, which is the base Python the venv was made from)
    python = Path(sys.prefix) / "bin" / "python"
    log.info("installed by %s: %s", install(python, requirements), " ".join(requirements))


if __name__ == "__main__":
    main()
