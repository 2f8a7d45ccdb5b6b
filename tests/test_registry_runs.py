"""The generic registry and the run directory's atomic writes."""
import pytest

from shrink.errors import UserError
from shrink.registry import Registry
from shrink.runs import RunDir, atomic_dir, atomic_write_json


def test_registry_resolves_aliases_and_explains_unknown_names():
    reg = Registry("widget")
    reg.add("resnet56", 56, aliases=("r56",))
    reg.add("resnet20", 20)
    assert reg.get("r56") == 56 and reg.get("RESNET20") == 20
    with pytest.raises(UserError, match="unknown widget 'resnet65'; did you mean 'resnet56'.*known: resnet20, resnet56"):
        reg.get("resnet65")
    with pytest.raises(ValueError):
        reg.add("r56", 1)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash while saving")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_previous_content(tmp_path):
    target = tmp_path / "model"
    for text in ("old", "new"):
        with atomic_dir(target) as tmp:
            (tmp / "w.txt").write_text(text)
    assert (target / "w.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_run_directory_is_complete_only_after_finish(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.write_text("recipe.yaml", "train: {}\n")
    run.write_json("metrics.json", {"partial": True})
    assert not run.is_complete()
    run.finish({"acc": 1.0}, "# done\n")
    assert run.is_complete()
    with pytest.raises(UserError, match="already complete"):
        RunDir.create(tmp_path / "run", resume=True)
    with pytest.raises(UserError, match="--overwrite"):
        RunDir.create(tmp_path / "run")
    assert not RunDir.create(tmp_path / "run", overwrite=True).is_complete()


def test_atomic_json_write(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": 1})
    assert (tmp_path / "m.json").read_text().strip().startswith("{")
