"""Written files get the mode a plain open() / mkdir gives (umask respected), not mkstemp's private 0600."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Iterator

import pytest

from shrink.models import build_model, save_model
from shrink.runs import RunDir, atomic_write_bytes


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Set the process umask for the test (restored afterwards); returns the setter."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_files_and_saved_models_are_readable_by_group_and_others(tmp_path: Path, umask) -> None:
    run = RunDir.create(tmp_path / "run")
    run.write_json("labels.json", {"label_names": ["neg", "pos"]})
    run.finish({"accuracy": 1.0}, "# report\n")
    save_model(build_model("resnet20", num_classes=2, image_size=8), run / "model")
    written = [run / "labels.json", run / "metrics.json", run / "report.md",
               run / "model" / "model.safetensors", run / "model" / "architecture.json"]
    assert {path.name: _mode(path) for path in written} == {path.name: 0o644 for path in written}
    assert _mode(run / "model") == 0o755  # the folder renamed into place


def test_a_stricter_umask_is_respected(tmp_path: Path, umask) -> None:
    umask(0o077)
    atomic_write_bytes(tmp_path / "private.bin", b"x")
    assert _mode(tmp_path / "private.bin") == 0o600
    assert [item.name for item in tmp_path.iterdir()] == ["private.bin"]  # no temp file left behind
