"""Atomic writes: a killed writer's temporary file does not outlive the next write."""

import json
import os
import subprocess
import sys

from keras_transfer.utils.files import atomic_write_json
from keras_transfer.utils.files import remove_stale_temporaries


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    dead = tmp_path / f".history.json.{_dead_pid()}.tmp"
    live = tmp_path / f".history.json.{os.getppid()}.tmp"  # a running process's
    other = tmp_path / f".other.json.{_dead_pid()}.tmp"
    for path in (dead, live, other):
        path.write_text("half")
    atomic_write_json(tmp_path / "history.json", {"epochs": []})
    assert json.loads((tmp_path / "history.json").read_text()) == {"epochs": []}
    assert not dead.exists()
    assert live.exists() and other.exists()


def test_stale_model_temporaries_are_matched_by_their_suffix(tmp_path):
    stale = tmp_path / f".best.keras.{_dead_pid()}.tmp.keras"
    stale.write_text("half")
    remove_stale_temporaries(str(tmp_path), "best.keras", ".tmp")
    assert stale.exists()  # another suffix: not this writer's
    remove_stale_temporaries(str(tmp_path), "best.keras", ".tmp.keras")
    assert not stale.exists()
