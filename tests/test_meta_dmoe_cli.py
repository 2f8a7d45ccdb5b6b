"""`distill --moe` and `distill adapt` end to end at toy sizes (trained experts, then the same experts loaded
from the run), multi-domain data formats, and one-line refusals of bad input."""
import csv
import json

import pytest
import torch
from PIL import Image

from distill.cli import main
from distill.moe.adapt_cli import load_meta_student
from shrink.data import load_task_data
from shrink.data.domains import domains_of, split_by_domains
from shrink.data.synthetic_domains import cluster_shapes
from shrink.models import build_model, load_model, save_model

TINY = ["--moe", "--model", "convnet", "--set", "model.args.widths=[4,8]", "--dataset", "synthetic-domains:12",
        "--test-domains", "t0,t1", "--epochs", "1", "--batch-size", "32", "--meta-steps", "3", "--support", "5",
        "--query", "5", "--set", "moe.aggregator.heads=2", "--set", "moe.aggregator.epochs=1",
        "--set", "moe.meta.eval_every=3", "--no-progress", "--quiet"]


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("moe") / "run"
    assert main([*TINY, "--train-experts", "2", "--out", str(out)]) == 0
    return out


def new_domain_folder(folder, with_labels=True):
    """Images of target domain t0 (new draws) as PNGs, with a metadata.csv (path[, label])."""
    (images, labels), domains = cluster_shapes(12, seed=0, split=2)
    folder.mkdir()
    rows = []
    for index, (image, label, domain) in enumerate(zip(images, labels, domains)):
        if domain == "t0":
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:04d}.png")
            rows.append([f"{index:04d}.png", f"shape-{int(label)}"])
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"] if with_labels else ["path"])
        writer.writerows(rows if with_labels else [row[:1] for row in rows])
    return folder


def test_moe_run_writes_student_teacher_and_every_accuracy(moe_run):
    metrics = json.loads((moe_run / "metrics.json").read_text())
    assert metrics["experts"] == 2 and metrics["experts_trained"]
    assert set(metrics["target"]) == {"erm", "teacher_before", "teacher_after", "meta_unadapted", "meta_adapted"}
    assert set(metrics["target"]["meta_adapted"]) == {"t0", "t1", "mean"}
    assert [row["step"] for row in metrics["meta"]["history"]] == [0, 3] and not metrics["meta"]["first_order"]
    assert metrics["meta"]["best_step"] in (0, 3)  # the start (ERM + one step) is a candidate too
    assert set(metrics["domain_to_expert"]) == set(metrics["source_domains"])
    for k in (1, 2):
        domains = json.loads((moe_run / "moe" / "experts" / f"expert-{k}" / "domains.json").read_text())
        assert {d for d, e in metrics["domain_to_expert"].items() if e == k - 1} == set(domains)
    student, meta, _ = load_meta_student(moe_run)
    assert meta["alpha"] == 0.01 and meta["support"] == 5 and meta["mask"] == "drop"
    with pytest.warns(UserWarning, match="unadapted"):
        student(torch.zeros(1, 3, 16, 16))


def test_distill_adapt_predicts_a_new_domain_and_saves_the_adapted_model(moe_run, tmp_path, capsys):
    labelled = new_domain_folder(tmp_path / "site")
    out = tmp_path / "adapted"
    assert main(["adapt", str(moe_run), "--data", str(labelled / "metadata.csv"), "--out", str(out)]) == 0
    summary = json.loads((out / "adapt.json").read_text())
    assert summary["examples"] == 12 and summary["support"] == 5 and 0 <= summary["accuracy"] <= 1
    assert len((out / "predictions.csv").read_text().strip().splitlines()) == 13
    adapted, base = load_model(out / "model"), load_model(moe_run / "model")
    changed = [n for n, p in base.state_dict().items() if not torch.equal(p, adapted.state_dict()[n])]
    assert changed and not any(n.startswith("fc.") for n in changed)  # features adapted, head kept
    # An unlabeled folder of images adapts the same way: labels are never needed.
    unlabeled = new_domain_folder(tmp_path / "site-unlabeled", with_labels=False)
    assert main(["adapt", str(moe_run), "--data", str(unlabeled), "--out", str(tmp_path / "u")]) == 0
    again = load_model(tmp_path / "u" / "model")
    assert all(torch.equal(p, again.state_dict()[n]) for n, p in adapted.state_dict().items())
    assert json.loads((tmp_path / "u" / "adapt.json").read_text())["accuracy"] is None
    with pytest.raises(SystemExit) as refused:
        main(["adapt", str(moe_run), "--data", str(unlabeled), "--out", str(out)])
    assert refused.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_experts_loaded_from_the_run_keep_their_domains(moe_run, tmp_path):
    experts = ",".join(str(moe_run / "moe" / "experts" / f"expert-{k}") for k in (1, 2))
    out = tmp_path / "loaded"
    assert main([*TINY, "--experts", experts, "--out", str(out)]) == 0
    first, second = (json.loads((run / "metrics.json").read_text()) for run in (moe_run, out))
    assert second["domain_to_expert"] == first["domain_to_expert"] and not second["experts_trained"]
    assert second["target"]["teacher_before"] != {} and not (out / "experts").exists()


def test_text_files_and_metadata_csv_carry_a_domain_column(tmp_path):
    for split in ("train", "dev"):
        (tmp_path / f"{split}.csv").write_text("text,label,site\ngood fun,1,a\nbad plot,0,b\ndull,0,a\nfine,1,c\n")
    task = load_task_data("text-files", str(tmp_path), domain_column="site")
    assert domains_of(task.train) == ["a", "b", "a", "c"] and task.train[1]["domain"] == "b"
    split = split_by_domains(task, ["c"], seed=0)
    assert split.sources == ["a", "b"] and len(split.targets["c"]) == 2
    images = tmp_path / "img"
    images.mkdir()
    rows = []
    for index in range(8):
        Image.new("RGB", (6, 6), (index * 30, 0, 0)).save(images / f"{index}.png")
        rows.append(f"{index}.png,{'cat' if index % 2 else 'dog'},h{index % 3},{'val' if index == 7 else 'train'}")
    (images / "metadata.csv").write_text("path,label,hospital,split\n" + "\n".join(rows) + "\n")
    task = load_task_data("metadata-csv", str(images), domain_column="hospital")
    assert task.label_names == ["cat", "dog"] and task.image_shape == (3, 6, 6)
    assert domains_of(task.train) == ["h0", "h1", "h2", "h0", "h1", "h2", "h0"] and domains_of(task.dev) == ["h1"]


def test_rotated_domains_follow_domainbed():
    from shrink.data.rotated import ANGLES, rotate_images, rotated_domains

    images = torch.zeros(12, 1, 9, 9, dtype=torch.uint8)
    images[:, :, 4, 4:] = 255  # a bar from the centre to the right edge
    (rotated, labels), domains = rotated_domains((images, torch.arange(12)))
    assert sorted(set(domains), key=int) == [str(a) for a in ANGLES] and domains.count("30") == 2
    turned = rotate_images(images[:1], 90)
    assert turned[0, 0, :4, 4].float().mean() > 100 and turned[0, 0, 4, 5:].float().mean() < 50
    assert sorted(labels.tolist()) == list(range(12))


@pytest.mark.parametrize("args, needle", [
    (["--train-experts", "2", "--dataset", "synthetic-image:3x8x8"], "no domain column"),
    (["--train-experts", "2", "--dataset", "text-files", "--data-dir", "{text}", "--domain-column", "site",
      "--model", "bert-tiny", "--set", "model.args={{}}"], "no domain column 'site'"),
    (["--train-experts", "30"], "30 experts need at least 30 source domains"),
    (["--train-experts", "2", "--test-domains", "t0,t99"], "t99 do not exist"),
    (["--experts", "{ten},{three}"], "predicts 3 labels"),
    (["--train-experts", "2", "--set", "moe.aggregator.heads=3"], "do not divide the feature size 8"),
    (["--train-experts", "2", "--set", "moe.meta.first_order=true"], "exactly zero gradient"),
    (["--train-experts", "2", "--set", "moe.meta.stepz=3"], "did you mean 'moe.meta.steps'"),
    ([], "needs experts: pass --experts"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(args, needle, tmp_path, refused):
    text = tmp_path / "text"
    text.mkdir()
    for split in ("train", "dev"):
        (text / f"{split}.csv").write_text("text,label\ngood fun,1\nbad plot,0\n")
    ten, three = tmp_path / "ten", tmp_path / "three"
    for folder, classes in ((ten, 10), (three, 3)):
        save_model(build_model("convnet", num_classes=classes, in_channels=3, widths=[4, 8]), folder)
    argv = [*TINY, *(a.format(text=text, ten=ten, three=three) for a in args), "--out", str(tmp_path / "run")]
    assert needle in refused(main, argv)
    assert not (tmp_path / "run").exists()


def test_shipped_recipe_validates_and_fixed_clusters_are_checked(tmp_path, capsys):
    from distill.config import DistillRecipe
    from shrink.recipe import load_recipe

    recipe = load_recipe("meta-dmoe-rotated", DistillRecipe)
    assert recipe.moe.test_domains == ["0", "75"] and recipe.moe.meta.support == 32 and recipe.moe.train_experts == 2
    with pytest.raises(SystemExit):
        main([*TINY, "--train-experts", "2", "--set", "moe.domain_to_expert={c0d0: 0}", "--out", str(tmp_path / "r")])
    assert "moe.domain_to_expert must map every source domain" in capsys.readouterr().err
