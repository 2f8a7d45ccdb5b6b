"""Tests for shrink.data: every dataset format from tiny files written here, collation, augmentation,
metrics and the generated datasets."""
from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shrink.data import (
    DATASETS, Compose, Normalize, RandomCrop, RandomHorizontalFlip, compute_metrics, load_task_data, make_collate,
)
from shrink.data.synthetic import synthetic_tokenizer
from shrink.errors import UserError


def write_tsv(path: Path, rows: list[list[str]], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\t".join(row) for row in rows) + "\n"
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")


# --- GLUE folders ------------------------------------------------------------------------------------

def test_cola_has_no_header_and_is_judged_by_mcc(tmp_path: Path) -> None:
    rows = [["gj04", "1", "", "The sailors rode the breeze clear of the rocks."],
            ["gj04", "0", "*", "The more we study verbs, the crazier they get get."],
            ["gj04", "1", "", 'He said "hello".']]
    write_tsv(tmp_path / "train.tsv", rows)
    write_tsv(tmp_path / "dev.tsv", rows[:2])
    write_tsv(tmp_path / "test.tsv", [["index", "sentence"], ["0", "Bill whistled past the house."]])
    task = load_task_data("CoLA", str(tmp_path))
    assert (task.name, len(task.train), len(task.dev), len(task.test)) == ("cola", 3, 2, 1)
    assert [task.train[i]["label"] for i in range(3)] == [1, 0, 1]
    assert task.train[2] == {"text": 'He said "hello".', "text_pair": None, "label": 1}  # quotes kept verbatim
    assert task.test[0]["label"] == -1  # GLUE hides test labels
    assert task.metrics == ("mcc",) and task.label_names == ["unacceptable", "acceptable"]


def test_mrpc_header_with_byte_order_mark(tmp_path: Path) -> None:
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    rows = [header, ["1", "1", "2", "He left.", "He went away."], ["0", "3", "4", "A cat.", "A dog."]]
    write_tsv(tmp_path / "train.tsv", rows, bom=True)
    write_tsv(tmp_path / "dev.tsv", rows, bom=True)
    task = load_task_data("mrpc", str(tmp_path))
    assert task.train[0] == {"text": "He left.", "text_pair": "He went away.", "label": 1}
    assert task.metrics == ("f1", "accuracy") and task.num_labels == 2


def test_stsb_is_a_regression(tmp_path: Path) -> None:
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"]
    rows = [header] + [[str(i), "g", "f", "y", "0", "s", "s", f"a{i}", f"b{i}", f"{i * 1.25:.3f}"] for i in range(4)]
    write_tsv(tmp_path / "train.tsv", rows)
    write_tsv(tmp_path / "dev.tsv", rows[:3])
    task = load_task_data("sts-b", str(tmp_path))
    assert task.is_regression and task.num_labels == 1 and task.label_names is None
    assert [task.train[i]["label"] for i in range(4)] == [0.0, 1.25, 2.5, 3.75]
    assert task.metrics == ("pearson", "spearman")


def test_mnli_reads_matched_or_mismatched_dev(tmp_path: Path) -> None:
    header = ["index", "promptID", "sentence1", "sentence2", "gold_label"]
    write_tsv(tmp_path / "train.tsv", [header, ["0", "1", "p", "h", "neutral"], ["1", "2", "p", "h", "contradiction"]])
    write_tsv(tmp_path / "dev_matched.tsv", [header, ["0", "1", "m", "h", "entailment"]])
    write_tsv(tmp_path / "dev_mismatched.tsv",
              [header, ["0", "1", "mm", "h", "neutral"], ["1", "2", "x", "y", "neutral"]])
    matched, mismatched = load_task_data("mnli", str(tmp_path)), load_task_data("mnli-mm", str(tmp_path))
    assert [matched.train[i]["label"] for i in range(2)] == [1, 2]
    assert matched.dev[0]["text"] == "m" and len(mismatched.dev) == 2 and mismatched.dev[0]["label"] == 1
    assert matched.num_labels == 3 and matched.label_names == ["entailment", "neutral", "contradiction"]


def test_rte_string_labels_and_bad_label(tmp_path: Path) -> None:
    header = ["index", "sentence1", "sentence2", "label"]
    write_tsv(tmp_path / "train.tsv", [header, ["0", "a", "b", "not_entailment"], ["1", "c", "d", "entailment"]])
    write_tsv(tmp_path / "dev.tsv", [header, ["0", "a", "b", "maybe"]])
    with pytest.raises(UserError, match=r"dev.tsv row 1: label 'maybe' is not one of entailment, not_entailment"):
        load_task_data("rte", str(tmp_path))
    write_tsv(tmp_path / "dev.tsv", [header, ["0", "a", "b", "entailment"]])
    task = load_task_data("rte", str(tmp_path))
    assert [task.train[i]["label"] for i in range(2)] == [1, 0] and task.metrics == ("accuracy",)


def test_glue_needs_data_dir_and_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"task sst2 needs --data-dir \(a GLUE task folder with train.tsv/dev.tsv\)"):
        load_task_data("sst2")
    with pytest.raises(UserError, match="does not exist"):
        load_task_data("sst2", str(tmp_path / "nowhere"))
    write_tsv(tmp_path / "train.tsv", [["sentence", "label"], ["fine", "1"]])
    with pytest.raises(UserError, match=f"missing file {tmp_path / 'dev.tsv'}"):
        load_task_data("sst2", str(tmp_path))
    with pytest.raises(UserError, match="unknown dataset 'sst3'; did you mean 'sst"):
        load_task_data("sst3", str(tmp_path))


def test_missing_column_lists_the_columns_present(tmp_path: Path) -> None:
    write_tsv(tmp_path / "train.tsv", [["sentence", "polarity"], ["fine", "1"]])
    write_tsv(tmp_path / "dev.tsv", [["sentence", "polarity"], ["fine", "1"]])
    with pytest.raises(UserError, match="has no column 'label'; its columns are: sentence, polarity"):
        load_task_data("sst2", str(tmp_path))
    assert load_task_data("sst2", str(tmp_path), label_column="polarity").train[0]["label"] == 1


def test_rows_with_missing_fields_are_skipped(tmp_path: Path) -> None:
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    write_tsv(tmp_path / "train.tsv", [header, ["0", "1", "2", "q?", "r?", "1"], ["1", "3", "4", "broken"]])
    write_tsv(tmp_path / "dev.tsv", [header, ["0", "1", "2", "q?", "r?", "0"]])
    task = load_task_data("qqp", str(tmp_path))
    assert len(task.train) == 1 and task.metrics == ("f1", "accuracy")


# --- CSV / TSV / JSONL files -----------------------------------------------------------------------

def test_text_files_csv_with_custom_columns_and_string_labels(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text('review,topic,stars\n"Great, really",x,pos\nawful,y,neg\nok,z,pos\n')
    (tmp_path / "dev.csv").write_text("review,topic,stars\nbad,y,neg\n")
    task = load_task_data("text-files", str(tmp_path), text_column="review", text_pair_column="topic",
                          label_column="stars")
    assert task.train[0] == {"text": "Great, really", "text_pair": "x", "label": 1}
    assert task.label_names == ["neg", "pos"] and task.dev[0]["label"] == 0
    assert task.metrics == ("accuracy", "f1") and task.test is None


def test_text_files_jsonl_ints_are_classes_and_floats_regression(tmp_path: Path) -> None:
    def write(name: str, rows: list[dict]) -> None:
        (tmp_path / name).write_text("".join(json.dumps(row) + "\n" for row in rows))

    write("train.jsonl", [{"text": "a", "label": 5}, {"text": "b", "label": 1}, {"text": "c", "label": 3}])
    write("dev.jsonl", [{"text": "d", "label": 3}])
    task = load_task_data("jsonl", str(tmp_path))
    assert task.label_names == ["1", "3", "5"] and task.dev[0]["label"] == 1 and not task.is_regression
    write("train.jsonl", [{"text": "a", "label": 0.5}, {"text": "b", "label": 2}])
    write("dev.jsonl", [{"text": "d", "label": 1.5}])
    task = load_task_data("text-files", str(tmp_path))
    assert task.is_regression and task.num_labels == 1 and task.dev[0]["label"] == 1.5
    assert task.metrics == ("pearson", "spearman")


def test_text_files_tsv_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing file"):
        load_task_data("text-files", str(tmp_path))
    write_tsv(tmp_path / "train.tsv", [["text", "label"], ["a", "x"]])
    write_tsv(tmp_path / "dev.tsv", [["text", "label"], ["b", "y"]])
    with pytest.raises(UserError, match="label 'y' is not one of x"):
        load_task_data("tsv", str(tmp_path))
    with pytest.raises(UserError, match="has no column 'body'; its columns are: text, label"):
        load_task_data("tsv", str(tmp_path), text_column="body")


# --- images: idx, CIFAR, folders ---------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_mnist_idx_files_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 28, 28)), np.array([0, 1, 2, 3, 4, 9])
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    task = load_task_data("mnist", str(tmp_path), augment=False)
    assert task.image_shape == (1, 28, 28) and task.num_labels == 10 and len(task.train) == 6
    assert task.dev[5]["label"] == 9
    mean, std = 0.1307, 0.3081
    restored = task.dev[3]["pixel_values"][0] * std + mean
    assert torch.allclose(restored * 255, torch.tensor(images[3], dtype=torch.float32), atol=1e-3)


def test_idx_bad_magic_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing file .*train-images-idx3-ubyte or .*train-images-idx3-ubyte.gz"):
        load_task_data("fashion-mnist", str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(UserError, match="is not an idx file"):
        load_task_data("fashion-mnist", str(tmp_path))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(UserError, match="is truncated or padded"):
        load_task_data("fashion-mnist", str(tmp_path))


def write_cifar10(folder: Path, per_batch: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, per_batch)), b"batch_label": b"fake"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))


def test_cifar10_pickle_folder(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-py")
    task = load_task_data("cifar10", str(tmp_path), augment=False)  # the parent folder works too
    assert len(task.train) == 20 and len(task.dev) == 4 and task.image_shape == (3, 32, 32)
    assert task.label_names[0] == "airplane"
    batch = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    first = torch.tensor(batch[b"data"][0].reshape(3, 32, 32), dtype=torch.float32) / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
    assert torch.allclose(task.dev[0]["pixel_values"], (first - mean) / std, atol=1e-5)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        batch = {b"data": np.zeros((3, 3072), np.uint8), b"fine_labels": [99, 0, 5], b"coarse_labels": [1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    task = load_task_data("cifar-100", str(folder))
    assert task.num_labels == 100 and task.train[0]["label"] == 99


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_cifar_pickle_is_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit(marker), b"labels": []}))
    with pytest.raises(UserError, match=r"refusing to load (posix|os)\.system"):
        load_task_data("cifar10", str(tmp_path))
    assert not marker.exists()


def test_image_folder_resizes_and_maps_classes(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("val", 1)):
        for label, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (20 + i, 10), colour).save(tmp_path / split / label / f"{i}.png")
    task = load_task_data("image-folder:8x12", str(tmp_path), augment=False)
    assert task.image_shape == (3, 8, 12) and task.label_names == ["cat", "dog"]
    assert (len(task.train), len(task.dev)) == (6, 2) and task.dev[1]["label"] == 1
    dog = task.dev[1]["pixel_values"]
    assert dog[2].mean() > dog[0].mean()  # blue channel brighter than red after normalisation
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(UserError, match="classes missing from train: bird"):
        load_task_data("image-folder", str(tmp_path))


# --- collation and augmentation ---------------------------------------------------------------------

def test_text_collate_pads_pairs_and_needs_a_tokenizer(tmp_path: Path) -> None:
    header = ["index", "sentence1", "sentence2", "label"]
    rows = [header, ["0", "good movie", "bad", "entailment"], ["1", "good", "the film was very dull", "not_entailment"]]
    write_tsv(tmp_path / "train.tsv", rows)
    write_tsv(tmp_path / "dev.tsv", rows)
    task = load_task_data("rte", str(tmp_path))
    with pytest.raises(UserError, match="needs a tokenizer"):
        make_collate(task)
    batch = make_collate(task, synthetic_tokenizer(), max_length=8)([task.train[0], task.train[1]])
    # [CLS] good movie [SEP] bad [SEP] + 2 pads; [CLS] good [SEP] the film was very [SEP] (dull cut off)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist() == [[1] * 6 + [0, 0], [1] * 8]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1]


def test_regression_labels_collate_as_float(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\ngood,0.5\nbad,1.5\n")
    (tmp_path / "dev.csv").write_text("text,label\ngood,1.0\n")
    task = load_task_data("csv", str(tmp_path))
    batch = make_collate(task, synthetic_tokenizer())([task.train[0], task.train[1]])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [0.5, 1.5]
    assert "text_pair" not in batch and batch["input_ids"].shape == (2, 3)


def test_image_collate_and_augmentation_only_on_train() -> None:
    task = load_task_data("synthetic-image:1x16x16", max_train_samples=8, max_eval_samples=4, seed=3)
    batch = make_collate(task)([task.dev[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 1, 16, 16) and batch["labels"].dtype == torch.long
    assert torch.equal(task.dev[0]["pixel_values"], task.dev[0]["pixel_values"])
    torch.manual_seed(0)
    first = torch.stack([task.train[i]["pixel_values"] for i in range(8)])
    torch.manual_seed(0)
    assert torch.equal(first, torch.stack([task.train[i]["pixel_values"] for i in range(8)]))
    plain = load_task_data("synthetic-image:1x16x16", max_train_samples=8, max_eval_samples=4, seed=3, augment=False)
    assert not torch.equal(first, torch.stack([plain.train[i]["pixel_values"] for i in range(8)]))


def test_crop_and_flip_keep_shape_and_follow_the_seed() -> None:
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).view(3, 8, 8)
    augment = Compose([RandomCrop(8, padding=2), RandomHorizontalFlip()])
    torch.manual_seed(1)
    runs = [augment(image) for _ in range(6)]
    torch.manual_seed(1)
    assert all(torch.equal(a, augment(image)) for a in runs)
    assert all(run.shape == image.shape for run in runs) and any(not torch.equal(r, image) for r in runs)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(image)[:, :, 0], image[:, :, -1])
    assert torch.equal(RandomCrop(8, padding=0)(image), image)
    normalized = Normalize((1.0, 2.0, 3.0), (2.0, 2.0, 2.0))(torch.ones(3, 2, 2))
    assert normalized[:, 0, 0].tolist() == [0.0, -0.5, -1.0]


# --- metrics ---------------------------------------------------------------------------------------

def test_metrics_match_hand_computed_values() -> None:
    labels = np.array([1, 1, 0, 0, 1])
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.0, 1.0]])  # predicts 1, 0, 0, 1, 1
    out = compute_metrics(("accuracy", "f1", "mcc"), logits, labels)
    # tp=2 fp=1 fn=1 tn=1: f1 = 2*2/(2*2+1+1); mcc = (2*1-1*1)/sqrt(3*3*2*2)
    assert out == pytest.approx({"accuracy": 0.6, "f1": 4 / 6, "mcc": 1 / 6})
    scores, gold = np.array([[1.0], [2.0], [3.0], [5.0]]), np.array([1.0, 3.0, 2.0, 4.0])
    # pearson: means 2.75 and 2.5, co-deviation sum 5.5, squared deviations 8.75 and 5;
    # spearman: ranks (1,2,3,4) vs (1,3,2,4), 1 - 6 * 2 / (4 * 15)
    out = compute_metrics(("pearson", "spearman"), scores, gold)
    assert out == pytest.approx({"pearson": 5.5 / np.sqrt(8.75 * 5), "spearman": 0.8})
    three = np.eye(3)[[0, 1, 2, 2]]
    assert compute_metrics(["f1"], three, np.array([0, 1, 2, 1]))["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    with pytest.raises(UserError, match="unknown metric 'bleu'"):
        compute_metrics(["bleu"], logits, labels)
    with pytest.raises(UserError, match="one score per example"):
        compute_metrics(["pearson"], logits, labels)


# --- generated datasets, subsets, Hugging Face --------------------------------------------------------

def test_synthetic_text_is_deterministic_learnable_and_saves_its_tokenizer(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    task = load_task_data("synthetic-text", max_train_samples=600, max_eval_samples=200, seed=5)
    again = load_task_data("synthetic-text", max_train_samples=600, max_eval_samples=200, seed=5)
    other = load_task_data("synthetic-text", max_train_samples=600, max_eval_samples=200, seed=6)
    assert [task.train[i] for i in range(600)] == [again.train[i] for i in range(600)]
    assert task.train[0] != other.train[0] and len(task.dev) == 200
    vectorizer = CountVectorizer()
    train_x = vectorizer.fit_transform([task.train[i]["text"] for i in range(600)])
    model = LogisticRegression(max_iter=500).fit(train_x, [task.train[i]["label"] for i in range(600)])
    dev_x = vectorizer.transform([task.dev[i]["text"] for i in range(200)])
    assert model.score(dev_x, [task.dev[i]["label"] for i in range(200)]) > 0.9
    task.tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = reloaded(task.train[0]["text"])["input_ids"]
    assert ids == task.tokenizer(task.train[0]["text"])["input_ids"] and reloaded.unk_token_id not in ids


def test_synthetic_image_is_deterministic_and_learnable() -> None:
    from sklearn.linear_model import LogisticRegression

    def arrays(split) -> tuple[np.ndarray, np.ndarray]:
        items = [split[i] for i in range(len(split))]
        pixels = torch.stack([x["pixel_values"] for x in items]).flatten(1).numpy()
        return pixels, np.array([x["label"] for x in items])

    options = {"max_train_samples": 500, "max_eval_samples": 200, "seed": 2, "augment": False}
    task, again = (load_task_data("synthetic-image:1x16x16", **options) for _ in range(2))
    assert task.image_shape == (1, 16, 16) and task.num_labels == 10
    assert torch.equal(task.train[7]["pixel_values"], again.train[7]["pixel_values"])
    train_x, train_y = arrays(task.train)
    dev_x, dev_y = arrays(task.dev)
    assert LogisticRegression(max_iter=300).fit(train_x, train_y).score(dev_x, dev_y) > 0.9
    assert load_task_data("synthetic-image", max_train_samples=2, max_eval_samples=2).image_shape == (3, 32, 32)
    with pytest.raises(UserError, match="write it like synthetic-image:1x16x16"):
        load_task_data("synthetic-image:16x16")


def test_max_samples_take_a_seeded_subset(tmp_path: Path) -> None:
    rows = [["sentence", "label"]] + [[f"s{i}", str(i % 2)] for i in range(50)]
    write_tsv(tmp_path / "train.tsv", rows)
    write_tsv(tmp_path / "dev.tsv", rows)
    first = load_task_data("sst2", str(tmp_path), max_train_samples=10, max_eval_samples=5, seed=1)
    second = load_task_data("sst2", str(tmp_path), max_train_samples=10, max_eval_samples=5, seed=1)
    texts = [first.train[i]["text"] for i in range(10)]
    assert len(first.dev) == 5 and texts == [second.train[i]["text"] for i in range(10)]
    assert texts != [f"s{i}" for i in range(10)] and len(set(texts)) == 10
    with pytest.raises(UserError, match="max_train_samples must be a positive"):
        load_task_data("sst2", str(tmp_path), max_train_samples=0)


def test_hf_datasets_from_disk_and_offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "not_entailment"])})
    part = datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [0, 1]}, features)
    datasets.DatasetDict({"train": part, "validation": part}).save_to_disk(str(tmp_path / "rte"))
    task = load_task_data("hf:glue/rte", str(tmp_path / "rte"))
    assert task.train[1] == {"text": "b", "text_pair": "d", "label": 1} and task.metrics == ("accuracy",)
    assert task.label_names == ["entailment", "not_entailment"] and task.test is None
    pictures = [Image.new("L", (6, 4), shade) for shade in (0, 90, 180)]
    gallery = datasets.Dataset.from_dict({"img": pictures, "label": [0, 1, 2]},
                                         datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")}))
    datasets.DatasetDict({"train": gallery, "test": gallery}).save_to_disk(str(tmp_path / "gallery"))
    images = load_task_data("hf:any", str(tmp_path / "gallery"), augment=False)
    assert images.modality == "image" and images.image_shape == (1, 4, 6) and images.num_labels == 3
    assert images.dev[2]["label"] == 2 and images.dev[2]["pixel_values"].mean() > images.dev[1]["pixel_values"].mean()
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="cannot reach the Hugging Face Hub for dataset glue; .* local directory"):
        load_task_data("hf:glue/sst2")
    with pytest.raises(UserError, match="write hf:<name>"):
        load_task_data("hf:")


def test_registry_lists_every_format() -> None:
    for name in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli", "text-files",
                 "hf", "cifar10", "cifar100", "mnist", "fashion-mnist", "image-folder", "synthetic-text",
                 "synthetic-image"):
        assert name in DATASETS
    assert DATASETS.canonical("SST-2") == "sst2" and DATASETS.canonical("sts-b") == "stsb"
    with pytest.raises(UserError, match="dataset sst2 takes no ':' option"):
        load_task_data("sst2:64")
