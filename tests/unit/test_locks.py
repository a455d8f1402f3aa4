"""The stage lock: a second holder is turned away and told who holds it; a dead holder blocks nothing."""

from __future__ import annotations

import subprocess
import sys

from mvcaug.io.locks import exclusive_lock, lock_holder


def test_a_second_holder_is_turned_away_and_learns_the_pid(tmp_path):
    path = tmp_path / "locks" / "stage.lock"
    with exclusive_lock(path) as first:
        assert first
        holder = subprocess.run([sys.executable, "-c", f"""
from mvcaug.io.locks import exclusive_lock, lock_holder
with exclusive_lock({str(path)!r}) as held:
    print(held, lock_holder({str(path)!r}))
"""], capture_output=True, text=True, check=True).stdout.split()
        import os

        assert holder == ["False", str(os.getpid())]


def test_the_lock_goes_with_a_killed_holder(tmp_path):
    path = tmp_path / "stage.lock"
    killed = subprocess.Popen([sys.executable, "-c", f"""
import time
from mvcaug.io.locks import exclusive_lock
with exclusive_lock({str(path)!r}):
    print("held", flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "held"
    killed.kill()
    killed.wait()
    with exclusive_lock(path) as held:
        assert held and lock_holder(path) != str(killed.pid)
