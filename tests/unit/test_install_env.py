"""tools/install_env.py: uv installs from the places pip is configured with, and pip takes over where uv fails."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tools.install_env import install, pip_settings, uv_arguments

RUNNING_UV = Path(sys.prefix) / "bin" / "uv"


def pip_config_list(config: Path, **variables: str) -> str:
    """What `pip config list` prints with `config` as the last config file read and the given PIP_* variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=str(config), **variables)
    return subprocess.run([sys.executable, "-m", "pip", "config", "list"], env=env, capture_output=True, text=True,
                          check=True).stdout


def test_pip_settings_apply_pips_precedence_to_its_own_listing(tmp_path):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nextra-index-url = file:///a/simple file:///b/simple\nfind-links = /from-global\n"
                      "index-url = https://mirror.example/simple\n[install]\nfind-links = /from-install\n")
    settings = pip_settings(pip_config_list(config, PIP_CONSTRAINT="/c.txt"))
    assert settings["extra-index-url"] == ["file:///a/simple", "file:///b/simple"]  # one value, two words: two urls
    assert settings["index-url"] == ["https://mirror.example/simple"]
    assert settings["constraint"] == ["/c.txt"]  # a PIP_* variable
    assert settings["find-links"] == ["/from-install"]  # the install section over [global]
    # a PIP_* variable over both sections
    assert pip_settings(pip_config_list(config, PIP_FIND_LINKS="/env"))["find-links"] == ["/env"]


def test_uv_gets_every_source_and_constraint_and_pips_choice_of_version():
    arguments = uv_arguments({"index-url": ["https://m/simple"], "extra-index-url": ["file:///a", "file:///b"],
                              "find-links": ["/wheels"], "constraint": ["/c.txt"], "no-index": ["true"],
                              "cert": ["/ca.pem"]})
    pairs = list(zip(arguments[:-1], arguments[1:], strict=True))
    for pair in [("--index-url", "https://m/simple"), ("--extra-index-url", "file:///a"),
                 ("--extra-index-url", "file:///b"), ("--find-links", "/wheels"), ("--constraint", "/c.txt"),
                 ("--index-strategy", "unsafe-best-match")]:
        assert pair in pairs
    assert "--no-index" in arguments and "--compile-bytecode" in arguments
    assert "--no-index" not in uv_arguments({"no-index": ["false"]})


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel of one module, tinypkg 1.0, with a valid RECORD."""
    files = {"tinypkg/__init__.py": b"ANSWER = 42\n",
             "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
             "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items()) + "tinypkg-1.0.dist-info/RECORD,,\n"
    wheel = folder / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in {**files, "tinypkg-1.0.dist-info/RECORD": record.encode()}.items():
            archive.writestr(name, data)
    return wheel


@pytest.fixture
def offline_wheels(tmp_path, monkeypatch):
    """A fresh venv (with pip) and a pip config that installs only from a folder holding tinypkg's wheel."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny_wheel(wheels)
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
    for key in [key for key in os.environ if key.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    return tmp_path / "venv" / "bin" / "python"


def installed_answer(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import tinypkg; print(tinypkg.ANSWER)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_uv_installs_from_the_wheel_folder_pip_is_configured_with_and_compiles_it(offline_wheels):
    assert RUNNING_UV.is_file(), "make setup-test installs uv into the test venv (tools/install_env.py)"
    assert install(offline_wheels, ["tinypkg"], uv=RUNNING_UV) == "uv"
    site = Path(subprocess.run([str(offline_wheels), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # looked at before anything imports tinypkg (an import would write the file itself)
    assert list((site / "tinypkg" / "__pycache__").glob("__init__.*.pyc")), "uv was asked to byte-compile as pip does"
    assert installed_answer(offline_wheels) == "42"


def test_pip_installs_when_uv_fails(offline_wheels, tmp_path):
    failing_uv = tmp_path / "uv"
    failing_uv.write_text("#!/bin/sh\nexit 2\n")
    failing_uv.chmod(0o755)
    assert install(offline_wheels, ["tinypkg"], uv=failing_uv) == "pip"
    assert installed_answer(offline_wheels) == "42"
