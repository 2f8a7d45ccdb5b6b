"""``metadata-csv``: a WILDS-style image folder: ``DIR/metadata.csv`` with one row per image, a ``path``
column (relative to DIR), a label column (``--label-column``, default ``label``), a domain column
(``--domain-column``, default ``domain``) and optionally a ``split`` column (``train``; ``val``/``dev``/
``id_val``/``ood_val``; ``test``/``id_test``/``ood_test``). Without a split column every row is training
data and a seeded 10% is kept aside as dev. Images are resized to the spec (``metadata-csv:32``) or to
the first image's size.

Usage: ``load_task_data("metadata-csv:32", "camelyon-small/", domain_column="hospital")``
"""
from __future__ import annotations

import torch

from shrink.data.domains import DomainDataset
from shrink.data.image_folder import open_image
from shrink.data.images import image_task, parse_dims, stack_pil
from shrink.data.tables import Table, read_table
from shrink.data.task import DATASETS, LoadRequest, TaskData, find_file, takes_spec
from shrink.data.text import LabelSpace
from shrink.errors import UserError

METADATA_FILE = "metadata.csv"
PATH_COLUMN, SPLIT_COLUMN = "path", "split"
SPLIT_NAMES = {"train": "train", "val": "dev", "dev": "dev", "validation": "dev", "id_val": "dev",
               "ood_val": "dev", "test": "test", "id_test": "test", "ood_test": "test"}
DEV_FRACTION = 0.1
WHAT = f"a folder with {METADATA_FILE} (columns path, label, domain[, split]) and the images it lists"


@DATASETS.register("metadata-csv", aliases=("wilds-csv",),
                   summary="your images with domains, WILDS-style; needs --data-dir with metadata.csv "
                           "(path, label, domain[, split]) and the images")
@takes_spec
def load_metadata_csv(request: LoadRequest) -> TaskData:
    """Read ``DIR/metadata.csv`` and its images. Usage: ``load_metadata_csv(request)``."""
    folder = request.folder(WHAT)
    table = read_table(find_file(folder, [METADATA_FILE], f"pass {WHAT}"))
    label, domain = request.label_column or "label", request.domain_column or "domain"
    for column in (PATH_COLUMN, label, domain):
        if column not in table.columns:
            raise UserError(f"{table.path} has no column '{column}'; its columns are: {', '.join(table.columns)} "
                            "(choose with --label-column / --domain-column)")
    labels = LabelSpace.infer(row[label] for row in table.rows)
    if labels.is_regression:
        raise UserError(f"{table.path}: the labels of '{label}' read as numbers with decimals; metadata-csv "
                        "takes class labels (names or integers)")
    rows = _rows_by_split(table, request.seed)
    if not rows["train"] or not rows["dev"]:
        raise UserError(f"{table.path}: the split column gives no {'train' if not rows['train'] else 'val'} rows")
    size = parse_dims(request.spec, 2, "metadata-csv", "32x32")
    images = {}
    for split, members in rows.items():
        if members:
            stacked = stack_pil((open_image(folder / row[PATH_COLUMN]) for row in members), size,
                                None if split == "train" else images["train"][0].shape[1])
            codes = [labels.encode(row[label], f"{table.path} row {row['_number']}") for row in members]
            images[split] = (stacked, torch.tensor(codes, dtype=torch.long))
            size = size or tuple(stacked.shape[2:])
    task = image_task(request.full_name, images["train"], images["dev"], images.get("test"), list(labels.values),
                      None, request.augment)
    task.train, task.dev = (DomainDataset(dataset, [row[domain] for row in rows[split]])
                            for dataset, split in ((task.train, "train"), (task.dev, "dev")))
    if task.test is not None:
        task.test = DomainDataset(task.test, [row[domain] for row in rows["test"]])
    return task


def _rows_by_split(table: Table, seed: int) -> dict[str, list[dict]]:
    numbered = [{**row, "_number": number} for number, row in enumerate(table.rows, start=1)]
    rows: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    if SPLIT_COLUMN not in table.columns:
        order = torch.randperm(len(numbered), generator=torch.Generator().manual_seed(seed)).tolist()
        held = set(order[:max(1, round(len(numbered) * DEV_FRACTION))])
        for index, row in enumerate(numbered):
            rows["dev" if index in held else "train"].append(row)
        return rows
    for row in numbered:
        split = SPLIT_NAMES.get(str(row[SPLIT_COLUMN]).strip().lower())
        if split is None:
            raise UserError(f"{table.path} row {row['_number']}: split '{row[SPLIT_COLUMN]}' is not one of "
                            f"{', '.join(SPLIT_NAMES)}")
        rows[split].append(row)
    return rows


__all__ = ["METADATA_FILE", "load_metadata_csv"]
