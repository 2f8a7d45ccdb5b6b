"""Recipes: safe YAML, typed validation, helpful errors for unknown keys, flag overrides."""
import argparse
from importlib import resources

import pytest

from shrink.cliargs import add_training_flags, recipe_overrides
from shrink.errors import UserError
from shrink.recipe import Recipe, build_recipe, list_recipes, load_recipe, read_yaml, recipe_path, save_recipe


def test_unknown_key_names_it_and_suggests_the_closest(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(UserError) as err:
        load_recipe(str(path))
    message = str(err.value)
    assert "train.epoch" in message and "did you mean 'train.epochs'" in message


def test_unknown_section_is_refused():
    with pytest.raises(UserError, match="unknown key 'trian'.*did you mean 'train'"):
        build_recipe({"trian": {"lr": 1}})


def test_wrong_type_names_the_key():
    with pytest.raises(UserError, match="train.batch_size"):
        build_recipe({"train": {"batch_size": "big"}})


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        read_yaml(path)


def test_flags_override_the_recipe_and_resolved_recipe_round_trips(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  name: resnet20\ntrain:\n  lr: 0.1\n  epochs: 5\n")
    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    args = parser.parse_args(["--recipe", str(path), "--lr", "0.01", "--set", "train.warmup_ratio=0.2",
                              "--task", "sst2"])
    recipe = load_recipe(args.recipe, overrides=recipe_overrides(args))
    assert recipe.train.lr == 0.01 and recipe.train.epochs == 5 and recipe.train.warmup_ratio == 0.2
    assert recipe.data.dataset == "sst2"
    save_recipe(recipe, tmp_path / "resolved.yaml")
    assert load_recipe(str(tmp_path / "resolved.yaml")) == recipe


def test_missing_recipe_lists_the_known_ones():
    with pytest.raises(UserError, match="not found"):
        load_recipe("no-such-recipe")


def test_shipped_recipes_are_package_resources_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here: only the package's own data can answer
    packaged = resources.files("shrink") / "recipes" / "demo.yaml"
    assert packaged.is_file() and {"demo", "train-demo", "resnet56-fashion-mnist"} <= set(list_recipes())
    assert recipe_path("demo").read_text() == packaged.read_text()
    assert load_recipe("recipes/resnet56-fashion-mnist.yaml") == load_recipe("resnet56-fashion-mnist")


def test_a_local_recipes_folder_wins_over_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "demo.yaml").write_text("train:\n  epochs: 7\n")
    assert load_recipe("demo").train.epochs == 7


def test_bad_set_syntax():
    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    with pytest.raises(UserError, match="KEY=VALUE"):
        recipe_overrides(parser.parse_args(["--set", "train.lr"]))


def test_defaults_validate():
    assert isinstance(build_recipe({}), Recipe)
