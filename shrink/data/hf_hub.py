"""``hf:<name>[/<config>]``: a Hugging Face ``datasets`` dataset, from the Hub or from ``save_to_disk``.

``hf:glue/sst2`` is dataset ``glue``, config ``sst2``; a namespaced id takes its config third
(``hf:nyu-mll/glue/rte``). With ``--data-dir`` the folder written by ``DatasetDict.save_to_disk`` is
read instead, offline. Text columns are found by their usual names unless named; an ``Image`` feature
makes an image task. Usage: ``load_task_data("hf:glue/rte")``
"""
from __future__ import annotations

from typing import Any

import torch

from shrink.data.glue import GLUE_TASKS
from shrink.data.images import image_task, stack_pil
from shrink.data.task import DATASETS, LoadRequest, TaskData, default_metrics, takes_spec
from shrink.data.text import TextColumns, TextDataset
from shrink.errors import UserError

DEV_SPLITS = ("validation", "validation_matched", "dev", "valid", "test")
TEXT_PAIRS = (("sentence1", "sentence2"), ("question1", "question2"), ("question", "sentence"),
              ("premise", "hypothesis"))
SINGLE_TEXTS = ("sentence", "text", "content", "review", "document", "question")
LABELS = ("label", "labels", "fine_label", "score")


def parse_hf_name(spec: str | None) -> tuple[str, str | None]:
    """``"glue/sst2"`` -> ``("glue", "sst2")``; ``"owner/name/config"`` -> ``("owner/name", "config")``.

    Usage: ``parse_hf_name("imdb") == ("imdb", None)``
    """
    parts = (spec or "").split("/")
    if not all(parts) or len(parts) > 3:
        raise UserError(f"cannot read the dataset name 'hf:{spec or ''}'; write hf:<name>[/<config>], "
                        "e.g. hf:glue/sst2 or hf:owner/name/config")
    if len(parts) == 3:
        return "/".join(parts[:2]), parts[2]
    return parts[0], parts[1] if len(parts) == 2 else None


def open_hf(request: LoadRequest) -> Any:
    """The ``DatasetDict`` of ``request``: from ``data_dir`` when given, else from the Hub."""
    import datasets

    if request.data_dir is not None:
        try:
            return datasets.load_from_disk(str(request.data_dir))
        except FileNotFoundError:
            raise UserError(f"{request.data_dir} is not a dataset folder written by save_to_disk") from None
    name, config = parse_hf_name(request.spec)
    try:
        return datasets.load_dataset(name, config)
    except ConnectionError:
        raise UserError(f"cannot reach the Hugging Face Hub for dataset {name}; download it (save_to_disk) "
                        "and pass a local directory with --data-dir") from None
    except (datasets.exceptions.DatasetNotFoundError, ValueError) as err:
        raise UserError(f"cannot load dataset {name} (config {config}): {str(err).splitlines()[0]}") from None


@DATASETS.register("hf", aliases=("huggingface",), summary="any Hugging Face dataset as hf:NAME[/CONFIG]; needs "
                   "the Hub or a datasets cache, or --data-dir with a save_to_disk folder (offline)")
@takes_spec
def load_hf(request: LoadRequest) -> TaskData:
    """Load ``hf:<name>[/<config>]`` as a TaskData. Usage: ``load_task_data("hf:imdb", "imdb_saved/")``."""
    import datasets

    splits = open_hf(request)
    if not isinstance(splits, datasets.DatasetDict) or "train" not in splits:
        raise UserError(f"dataset {request.full_name} has no train split; pass a DatasetDict with train and "
                        "validation (or test) splits")
    dev = next((name for name in DEV_SPLITS if name in splits), None)
    if dev is None:
        raise UserError(f"dataset {request.full_name} has no validation or test split (it has {', '.join(splits)})")
    parts = [splits["train"], splits[dev], splits["test"] if "test" in splits and dev != "test" else None]
    features = parts[0].features
    label = _pick(request.label_column, LABELS, parts[0].column_names, request.full_name, "label")
    names = list(features[label].names) if isinstance(features[label], datasets.ClassLabel) else None
    image = next((column for column, kind in features.items() if isinstance(kind, datasets.Image)), None)
    if image is not None:
        return _image_task(request, parts, image, label, names)
    return _text_task(request, parts, label, names, features[label].dtype.startswith("float"))


def _text_task(request: LoadRequest, parts: list[Any], label: str, names: list[str] | None,
               regression: bool) -> TaskData:
    columns = _text_columns(request, parts[0].column_names, label)
    num_labels = 1 if regression else len(names) if names else int(max(parts[0][label])) + 1
    name, config = parse_hf_name(request.spec) if request.spec else ("", None)
    glue = GLUE_TASKS.get(config or "") if name.endswith("glue") else None
    splits = [None if part is None else _text_split(part, columns) for part in parts]
    return TaskData(
        name=request.full_name, modality="text", train=splits[0], dev=splits[1], test=splits[2],
        num_labels=num_labels, is_regression=regression,
        metrics=glue.metrics if glue else default_metrics(regression), label_names=names,
    )


def _image_task(request: LoadRequest, parts: list[Any], image: str, label: str, names: list[str] | None) -> TaskData:
    train = stack_pil(parts[0][image])
    # Dev and test follow train's size and colour so that one model reads them all.
    channels, *size = train.shape[1:]
    splits = [None if part is None else (stack_pil(part[image], size, channels),
                                         torch.tensor(list(part[label]), dtype=torch.long)) for part in parts[1:]]
    labels = torch.tensor(list(parts[0][label]), dtype=torch.long)
    names = names or [str(index) for index in range(int(labels.max()) + 1)]
    return image_task(request.full_name, (train, labels), splits[0], splits[1], names, None, request.augment)


def _pick(chosen: str | None, usual: tuple[str, ...], present: list[str], dataset: str, what: str) -> str:
    column = chosen or next((name for name in usual if name in present), None)
    if column is None or column not in present:
        named = f" '{chosen}'" if chosen else ""
        raise UserError(f"dataset {dataset} has no {what} column{named}; its columns are: "
                        f"{', '.join(present)} (choose with --{what}-column)")
    return column


def _text_columns(request: LoadRequest, present: list[str], label: str) -> TextColumns:
    """The named columns, else the first usual sentence pair, else the first usual single text column."""
    pair = next((pair for pair in TEXT_PAIRS if set(pair) <= set(present)), None)
    if request.text_column is None and pair is not None:
        text, second = pair
    else:
        text = request.text_column or next((name for name in SINGLE_TEXTS if name in present), "text")
        second = None
    columns = TextColumns(text, request.text_pair_column or second, label)
    columns.check(present, f"dataset {request.full_name}")
    return columns


def _text_split(split: Any, columns: TextColumns) -> TextDataset:
    return TextDataset(split[columns.text], None if columns.pair is None else split[columns.pair], split[columns.label])
