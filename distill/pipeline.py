"""The composed distillation step (spec §1): L = w_kd·L_KD(z_S, z_T; T) + Σ w_inter·L_inter + w_hard·CE.

``DistillStep`` is the core engine's pluggable step (``step(model, batch) -> {"loss": ..., terms}``). It is an
``nn.Module`` holding the intermediate objectives, so their projections and MI critics are trained and
checkpointed with the student; the frozen teacher is kept outside its parameters. Features are read by
forward hooks addressed by module path (:class:`distill.features.FeatureTaps`): a Hugging Face model's
embeddings and layers (or query/key projections for attention scores), or the module paths a recipe lists
for any other model (``layer1`` of a ResNet, ``blocks.3`` of a ViT).

Training examples carry their index (:class:`IndexedExamples`), so the teacher's logits can be computed once
over an unaugmented training set (:func:`teacher_logits`) and looked up instead of running the teacher.
When teacher and student tokenize differently, :class:`DistillCollate` tokenizes for both.

Usage::

    terms = [build_term(section, "sum", student, teacher.feature_model, student_inputs, teacher_inputs)]
    step = DistillStep(student, teacher, kd=prediction_loss("kl", 2.0), terms=terms, num_labels=2)
    Trainer(student, IndexedExamples(task.train), task.dev, collate=DistillCollate(collate), step=step).fit()
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from distill.augment.mixup import Mixup
from distill.augment.unlabeled import gold_rows
from distill.config import IntermediateSection
from distill.features import FeatureTaps, attention_scores, hf_attention_paths, hf_layer_paths
from distill.objectives import (
    INTERMEDIATE_LOSSES,
    IntermediateObjective,
    KDLoss,
    MILoss,
    hard_label_loss,
    resolve_layer_map,
)
from distill.objectives.critics import SummaryMLP
from distill.objectives.layer_maps import FeatureKind
from distill.objectives.tokens import summary
from distill.teachers import Teacher
from shrink.errors import UserError
from shrink.progress import bars_on
from shrink.train import forward_logits

INDEX_KEY = "example_index"
TEACHER_PREFIX = "teacher_"
Batch = Mapping[str, Tensor]
FeaturePath = str | tuple[str, str]  # a module path, or (query, key) projection paths for attention scores


# ------------------------------------------------------------------------------------------------ data
class IndexedExamples(Dataset):
    """A dataset whose examples also carry their ``index`` (to look up cached teacher outputs).

    Usage: ``IndexedExamples(task.train)[3]["index"] == 3``
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "index": index}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


class DistillCollate:
    """The student's collate; indexed (training) examples also get ``example_index`` and, with a separate
    teacher tokenizer, ``teacher_``-prefixed teacher inputs. Dev examples collate as for the student alone.

    Usage: ``DistillCollate(make_collate(task, student_tok), make_collate(task, teacher_tok))``
    """

    def __init__(self, student: Callable[[list], dict], teacher: Callable[[list], dict] | None = None) -> None:
        self.student, self.teacher = student, teacher

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        if "index" not in examples[0]:
            return self.student(examples)
        plain = [{key: value for key, value in example.items() if key != "index"} for example in examples]
        batch = self.student(plain)
        batch[INDEX_KEY] = torch.tensor([example["index"] for example in examples])
        if self.teacher is not None:
            batch.update({TEACHER_PREFIX + key: value for key, value in self.teacher(plain).items() if key != "labels"})
        return batch


def split_batch(batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]:
    """(student batch with labels, teacher inputs, example indices or None) from a collated batch.

    Usage: ``student_batch, teacher_inputs, index = split_batch(batch)``
    """
    student = {k: v for k, v in batch.items() if k != INDEX_KEY and not k.startswith(TEACHER_PREFIX)}
    teacher = {k[len(TEACHER_PREFIX):]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}
    return student, teacher or {k: v for k, v in student.items() if k != "labels"}, batch.get(INDEX_KEY)


def same_tokenizer(first: Any, second: Any) -> bool:
    """True when both tokenize alike (same vocabulary) or neither is a tokenizer (vision).

    Usage: ``same_tokenizer(student_tokenizer, teacher_tokenizer)``
    """
    if first is None or second is None or first is second:
        return first is second
    return first.get_vocab() == second.get_vocab()


@torch.no_grad()
def teacher_logits(teacher: Teacher, dataset: Dataset, collate: Callable[[list], dict], batch_size: int = 64,
                   device: torch.device | str = "cpu", progress: bool = True) -> Tensor:
    """The teacher's logits for every example of ``dataset``, row i for example i, in eval mode (fp32, on CPU).

    Usage: ``cache = teacher_logits(teacher, task.train, DistillCollate(collate))``
    """
    teacher.to(device)
    loader = DataLoader(IndexedExamples(dataset), batch_size=batch_size, shuffle=False, collate_fn=collate)
    rows = []
    for batch in tqdm(loader, desc="teacher outputs", unit="batch", disable=not bars_on(progress)):
        _, inputs, _ = split_batch(batch)
        rows.append(teacher.logits({k: v.to(device) for k, v in inputs.items()}).float().cpu())
    return torch.cat(rows)


# -------------------------------------------------------------------------------------------- features
def loss_features(loss: str) -> FeatureKind:
    """Which features a registered intermediate loss reads: "hidden" or "attention". Usage: ``loss_features("mi")``."""
    build = INTERMEDIATE_LOSSES.get(loss)
    return getattr(build, "func", build).features


def feature_paths(model: nn.Module, kind: FeatureKind, listed: Sequence[str] | None, side: str) -> list[FeaturePath]:
    """Feature paths by index: the recipe's ``listed`` module paths, else a Hugging Face model's own.

    Usage: ``feature_paths(bert, "hidden", None, "student")  # ['bert.embeddings', 'bert.encoder.layer.0', ...]``
    """
    if listed:
        if kind == "attention":
            raise UserError(f"attention losses read a Hugging Face model's query/key projections; remove "
                            f"{side}_layers or use a hidden-state loss")
        return list(listed)
    if not hasattr(model, "config"):
        raise UserError(f"the {side} is not a Hugging Face model: list the modules to read in the intermediate "
                        f"entry's {side}_layers (e.g. [layer1, layer2, layer3] for a CIFAR ResNet)")
    return list(hf_layer_paths(model) if kind == "hidden" else hf_attention_paths(model))


def _flat(paths: Sequence[FeaturePath]) -> list[str]:
    return [part for path in paths for part in ((path,) if isinstance(path, str) else path)]


def read_feature(taps: FeatureTaps, path: FeaturePath, heads: int) -> Tensor:
    """A tapped output, or pre-softmax attention scores from tapped (query, key) projections.

    Usage: ``read_feature(taps, ("layer.0.query", "layer.0.key"), heads=12)  # [B, 12, L, L]``
    """
    return taps[path] if isinstance(path, str) else attention_scores(taps[path[0]], taps[path[1]], heads)


@torch.no_grad()
def sample_features(model: nn.Module, paths: Sequence[str], inputs: Batch) -> list[Tensor]:
    """Each path's output on one sample batch, in eval mode (the model's mode is kept).

    Usage: ``sample_features(resnet, ["layer1", "layer2"], {"pixel_values": x})[0].shape  # [B, 16, H, W]``
    """
    was_training = model.training
    model.eval()
    try:
        with FeatureTaps(model, paths) as taps:
            forward_logits(model, inputs)
            return taps.features()
    finally:
        model.train(was_training)


def feature_width(feature: Tensor) -> int:
    """Channels of a feature map, else the last dimension. Usage: ``feature_width(torch.zeros(2, 16, 8, 8)) == 16``."""
    return feature.shape[1] if feature.dim() == 4 else feature.shape[-1]


def reads_summary(module: nn.Module) -> bool:
    """True when a pair loss compares one summary vector per example ([CLS] or a feature map's mean): pkd, and
    MI with the mlp critic. Usage: ``reads_summary(objective.pair_module(0, 0))``
    """
    summary_view = getattr(module, "view", None) == "summary"
    return summary_view or (isinstance(module, MILoss) and isinstance(module.critic.student, SummaryMLP))


def uninformative_pairs(objective: IntermediateObjective, student: Mapping[int, Tensor],
                        teacher: Mapping[int, Tensor]) -> list[tuple[int, int]]:
    """Fixed pairs whose summary features are the same for every sample example on either side, so a summary
    loss can learn nothing from them (the [CLS] embedding of a BERT: one token, one position, one segment).

    Usage: ``objective.drop_pairs(uninformative_pairs(objective, student_samples, teacher_samples))``
    """
    def constant(features: Tensor) -> bool:
        vectors = summary(features).float()
        return len(vectors) > 1 and bool((vectors - vectors[:1]).abs().max() <= 1e-6 * (1 + vectors.abs().max()))

    return [(t, s) for t, s in objective.layer_map.pairs
            if reads_summary(objective.pair_module(t, s)) and (constant(student[s]) or constant(teacher[t]))]


def _heads(model: nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "num_attention_heads", 0) or 0)


def alignment_free(objective: IntermediateObjective) -> bool:
    """True when no pair compares token positions: [CLS]-summary losses (pkd) and MI with the mlp critic.

    Usage: ``alignment_free(term.objective)  # needed when teacher and student tokenize differently``
    """
    return all(reads_summary(module) for module in objective.losses.values())


class IntermediateTerm(nn.Module):
    """One weighted intermediate objective and the feature path of each layer index it reads on each side.

    Usage: ``term(student_taps, teacher_taps, batch["attention_mask"])``
    """

    def __init__(self, name: str, objective: IntermediateObjective, weight: float,
                 student_paths: Mapping[int, FeaturePath], teacher_paths: Mapping[int, FeaturePath],
                 student_heads: int = 0, teacher_heads: int = 0) -> None:
        super().__init__()
        self.name, self.objective, self.weight = name, objective, weight
        self.student_paths, self.teacher_paths = dict(student_paths), dict(teacher_paths)
        self.student_heads, self.teacher_heads = student_heads, teacher_heads

    def tapped(self, side: str) -> list[str]:
        """Module paths to hook on ``side`` ("student" or "teacher")."""
        return _flat(list((self.student_paths if side == "student" else self.teacher_paths).values()))

    def forward(self, student_taps: FeatureTaps, teacher_taps: FeatureTaps, mask: Tensor | None) -> Tensor:
        """w_inter · L_inter over the mapped pairs of the latest forward passes."""
        student = {i: read_feature(student_taps, p, self.student_heads) for i, p in self.student_paths.items()}
        teacher = {i: read_feature(teacher_taps, p, self.teacher_heads) for i, p in self.teacher_paths.items()}
        return self.weight * self.objective(student, teacher, mask)


def build_term(section: IntermediateSection, reduction: str, student: nn.Module, teacher: nn.Module,
               student_inputs: Batch, teacher_inputs: Batch, name: str | None = None) -> IntermediateTerm:
    """An intermediate term for ``section``, sized by one sample forward of each model; UserError for unknown
    losses or maps, layers the models lack, options the loss does not take, alpha outside [0, 1].

    Usage: ``build_term(IntermediateSection(loss="mi", alpha=0.9), "sum", student, teacher, s_in, t_in)``
    """
    kind = loss_features(section.loss)
    if section.features is not None and section.features != kind:
        raise UserError(f"intermediate loss '{section.loss}' reads {kind} features, not {section.features}; "
                        "fix 'features' or pick another loss")
    student_all = feature_paths(student, kind, section.student_layers, "student")
    teacher_all = feature_paths(teacher, kind, section.teacher_layers, "teacher")
    layers = [len(paths) if kind == "attention" else max(len(paths) - 1, 1) for paths in (teacher_all, student_all)]
    layer_map = resolve_layer_map(section.layer_map, layers[0], layers[1], kind)
    for side, index, paths in [("teacher", t, teacher_all) for t, _ in layer_map.all_pairs()] + \
                              [("student", s, student_all) for _, s in layer_map.all_pairs()]:
        if index >= len(paths):
            raise UserError(f"layer map '{section.layer_map}' reads {side} feature {index}, but {side}_layers lists "
                            f"{len(paths)} module path(s); list more paths or give pairs like '0:0'")
    used_student = sorted({s for _, s in layer_map.all_pairs()})
    used_teacher = sorted({t for t, _ in layer_map.all_pairs()})
    samples: tuple[dict[int, Tensor], dict[int, Tensor]] = ({}, {})
    if kind == "attention":
        widths: tuple[Any, Any] = (_heads(student), _heads(teacher))
    else:
        samples = (dict(zip(used_student, sample_features(student, [student_all[i] for i in used_student],
                                                          student_inputs))),
                   dict(zip(used_teacher, sample_features(teacher, [teacher_all[i] for i in used_teacher],
                                                          teacher_inputs))))
        widths = tuple({i: feature_width(f) for i, f in side.items()} for side in samples)
    options = {**section.options, **{k: v for k, v in (("alpha", section.alpha), ("critic", section.critic))
                                     if v is not None}}
    try:
        objective = IntermediateObjective(section.loss, section.layer_map, layers[0], layers[1], widths[0], widths[1],
                                          reduction=reduction, **options)  # type: ignore[arg-type]
    except TypeError as err:
        raise UserError(f"intermediate loss '{section.loss}' does not take the options {sorted(options)}: "
                        f"{err}") from None
    if section.lr_scale != 1:
        objective.lr_scale = section.lr_scale  # read by the engine's optimizer (shrink.optim)
    if kind == "hidden":
        objective.drop_pairs(uninformative_pairs(objective, *samples))
    used_student = sorted({s for _, s in objective.layer_map.all_pairs()})
    used_teacher = sorted({t for t, _ in objective.layer_map.all_pairs()})
    return IntermediateTerm(name or objective.loss_name, objective, section.weight,
                            {i: student_all[i] for i in used_student}, {i: teacher_all[i] for i in used_teacher},
                            _heads(student), _heads(teacher))


# ------------------------------------------------------------------------------------------------ step
@dataclass
class StepTerms:
    """The running mean of each loss term over a stage's steps (for its report).

    Usage: ``terms = StepTerms(); terms.add({"kd": loss}); terms.means()``
    """

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, parts: Mapping[str, Tensor]) -> None:
        """Add one step's terms."""
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value.detach())
        self.count += 1

    def means(self) -> dict[str, float]:
        """Mean of each term. Usage: ``step.terms_seen.means()["kd"]``."""
        return {key: total / max(self.count, 1) for key, total in self.sums.items()}


class DistillStep(nn.Module):
    """The training step: KD on the teacher's logits, hard labels, and intermediate terms read through hooks.

    The teacher's logits come from ``cached_logits`` (row per training example) when the step needs no
    teacher features and no ``mixup``, else from a live forward in eval mode without gradients. With
    ``mixup`` both models see the batch doubled to [original; mixed]. The hard-label term reads only rows with
    a gold label (unlabeled text, augmented copies and mixed rows have none). Call :meth:`close` to remove
    the hooks when the stage ends.
    Usage: ``DistillStep(student, teacher, kd=KDLoss("ce"), terms=[], num_labels=2)(student, batch)["loss"]``
    """

    def __init__(self, student: nn.Module, teacher: Teacher, *, kd: KDLoss | None, terms: Sequence[IntermediateTerm],
                 num_labels: int, kd_weight: float = 1.0, hard_weight: float = 0.0,
                 cached_logits: Tensor | None = None, mixup: Mixup | None = None) -> None:
        super().__init__()
        if (kd is None or kd_weight == 0) and hard_weight == 0 and not terms:
            raise UserError("a distillation stage needs an objective: a kd weight, a hard_weight or an "
                            "intermediate term")
        self.frozen = (teacher,)  # a tuple keeps the teacher out of this module's parameters and checkpoints
        self.kd = kd if kd_weight else None
        self.kd_weight, self.hard_weight, self.num_labels = kd_weight, hard_weight, num_labels
        self.terms = nn.ModuleList(terms)
        self.cached_logits, self.mixup = cached_logits, mixup
        self.terms_seen = StepTerms()
        self.mi_k: int | None = None  # the largest MI batch K (after gathering) seen; None without MI
        self.student_taps = self.teacher_taps = None
        if terms:
            paths = {side: sorted({p for term in terms for p in term.tapped(side)}) for side in ("student", "teacher")}
            self.student_taps = FeatureTaps(student, paths["student"])
            self.teacher_taps = FeatureTaps(teacher.feature_model, paths["teacher"])
        self._teacher_device: torch.device | None = None

    @property
    def teacher(self) -> Teacher:
        """The frozen teacher."""
        return self.frozen[0]

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """``{"loss": total, "kd": ..., "hard": ..., <term name>: ...}`` for one batch."""
        student_batch, teacher_inputs, index = split_batch(batch)
        if self.mixup is not None:
            self._place_teacher(next(iter(teacher_inputs.values())).device)
            student_batch, teacher_inputs = self.mixup(getattr(model, "module", model), self.teacher.feature_model,
                                                       student_batch, teacher_inputs)
            index = None  # mixed rows have no cached logits
        teacher_out = self._teacher_logits(teacher_inputs, index)
        student_logits = forward_logits(model, student_batch)
        parts: dict[str, Tensor] = {}
        if self.kd is not None:
            parts["kd"] = self.kd_weight * self.kd(student_logits, teacher_out)
        if self.hard_weight:
            labels = student_batch["labels"]
            gold = gold_rows(labels)
            hard = hard_label_loss(student_logits[gold], labels[gold], self.num_labels) if gold.any() else \
                student_logits.sum() * 0.0
            parts["hard"] = self.hard_weight * hard
        mask = student_batch.get("attention_mask")
        for position, term in enumerate(self.terms):
            parts[f"{position}:{term.name}"] = term(self.student_taps, self.teacher_taps, mask)
            self.mi_k = max(self.mi_k or 0, term.objective.last_k or 0) or None
        self.terms_seen.add(parts)
        return {"loss": torch.stack(list(parts.values())).sum(), **parts}

    @property
    def teacher_outputs(self) -> str:
        """Where the teacher's logits come from: "cached", "live" (a forward per step) or "none" (not used).

        Usage: ``metrics["teacher_outputs"] = step.teacher_outputs``
        """
        if self.kd is None and not len(self.terms):
            return "none"
        return "cached" if self.cached_logits is not None and not len(self.terms) and self.mixup is None else "live"

    def _teacher_logits(self, inputs: dict[str, Tensor], index: Tensor | None) -> Tensor | None:
        device = next(iter(inputs.values())).device
        if self.kd is None and not len(self.terms):
            return None
        if self.cached_logits is not None and index is not None and not len(self.terms):
            return self.cached_logits[index.cpu()].to(device)
        self._place_teacher(device)
        with torch.no_grad():
            return self.teacher.logits(inputs)

    def _place_teacher(self, device: torch.device) -> None:
        if self._teacher_device != device:
            self.teacher.to(device)
            self._teacher_device = device

    def close(self) -> None:
        """Remove the feature hooks from student and teacher. Usage: ``step.close()``."""
        for taps in (self.student_taps, self.teacher_taps):
            if taps is not None:
                taps.remove()


__all__ = [
    "INDEX_KEY",
    "TEACHER_PREFIX",
    "DistillCollate",
    "DistillStep",
    "IndexedExamples",
    "IntermediateTerm",
    "StepTerms",
    "alignment_free",
    "build_term",
    "feature_paths",
    "feature_width",
    "loss_features",
    "read_feature",
    "reads_summary",
    "same_tokenizer",
    "sample_features",
    "split_batch",
    "teacher_logits",
    "uninformative_pairs",
]
