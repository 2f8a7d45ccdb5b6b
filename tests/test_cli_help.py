"""Help and listings a person can read: grouped flags, examples, one line per model/dataset/recipe, tables
that fit the terminal, report.md's column legend."""
from __future__ import annotations

import pytest
from distill.cli import build_parser as distill_parser
from prune.cli import build_parser as prune_parser
from prune.cli import main as prune_main
from shrink.cli import build_parser as shrink_parser
from shrink.cli import main as shrink_main
from shrink.data import DATASETS
from shrink.recipe import list_recipes
from shrink.report import column_legend, print_table


def section_titles(help_text: str) -> list[str]:
    return [line[:-1] for line in help_text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]


@pytest.mark.parametrize("parser, first_group", [(distill_parser(), "teacher and student"),
                                                 (prune_parser(), "pruning")])
def test_method_flags_come_first_then_data_model_training_and_examples_end_the_help(parser, first_group) -> None:
    text = parser.format_help()
    titles = section_titles(text)
    assert titles.index(first_group) < titles.index("data") < titles.index("model") < titles.index("training")
    assert titles[-1] == "examples" and f"\n  {parser.prog} --" in text.split("examples:")[1]
    assert text.startswith(f"usage: {parser.prog} [options]\n")


def test_prune_metatrain_help_names_itself_and_its_own_example(capsys) -> None:
    with pytest.raises(SystemExit):
        prune_main(["metatrain", "--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: prune metatrain [options]")
    examples = text.split("examples:")[1].strip().splitlines()
    assert examples and all(line.strip().startswith("prune metatrain ") for line in examples)


def test_every_shrink_subcommand_help_has_examples_of_that_subcommand() -> None:
    actions = shrink_parser()._subparsers._group_actions[0].choices
    for name in ("train", "export", "bench"):
        examples = actions[name].format_help().split("examples:")[1]
        assert f"shrink {name} " in examples


@pytest.mark.parametrize("listing, expected", [("models", None), ("datasets", len(DATASETS.names())),
                                               ("recipes", len(list_recipes()))])
def test_listings_are_one_line_each_saying_size_or_needs_or_command(listing, expected, capsys) -> None:
    shrink_main([listing])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == expected if expected else len(lines) > 15
    by_name = {line.split()[0]: line for line in lines}
    if listing == "models":
        assert "856K" in by_name["resnet56"] and "offline" in by_name["resnet56"] and "Hub" in by_name["bert-base"]
    elif listing == "datasets":
        assert "--data-dir" in by_name["sst2"] and "offline" in by_name["synthetic-text"]
    else:
        assert by_name["demo"].split()[1] == "distill" and "shrink train" in by_name["train-demo"]


def test_tables_fit_the_terminal_width(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    row = {"model": "a-long-model-name-for-a-table", "dev accuracy": 0.9123, "params": 1_234_567,
           "MACs": 12_345_678, "latency b1 ms": "noisy: 9.7 (IQR 85%)", "b1 p90 ms": 12.5, "retention": 0.987,
           "best epoch chosen on": "dev (the reported split: optimistic)"}
    print_table("result", [row])
    lines = capsys.readouterr().out.splitlines()
    assert "a-long" in "".join(lines) and max(len(line) for line in lines) <= 80


def test_report_legend_explains_known_columns_with_p90_beside_the_median() -> None:
    legend = column_legend(["model", "latency b32 ms", "b32 p90 ms", "holdout f1"])
    assert "batch of 32" in legend and "90th percentile" in legend and "f1 on the holdout split" in legend
    assert "**model**" not in legend  # self-explaining columns are left out
