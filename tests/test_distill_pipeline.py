"""distill pipeline pieces: teachers, student initialisation, the composed step, teacher-output caching,
features by module path (BERT and ResNet), separate tokenization."""
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from distill.config import IntermediateSection
from distill.objectives import KDLoss
from distill.pipeline import (
    DistillCollate,
    DistillStep,
    IndexedExamples,
    alignment_free,
    build_term,
    same_tokenizer,
    split_batch,
    teacher_logits,
)
from distill.students import StudentRequest, build_student, copy_teacher_layers
from distill.teachers import EnsembleTeacher, SingleTeacher, build_teacher
from shrink.data import load_task_data, make_collate
from shrink.data.synthetic import synthetic_tokenizer
from shrink.errors import UserError
from shrink.models import build_model




@pytest.fixture(scope="module")
def task():
    return load_task_data("synthetic-text", max_train_samples=40, max_eval_samples=16, seed=0)


def tiny_bert(layers=4, hidden=16, heads=2, labels=2, vocab=None, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab or len(synthetic_tokenizer()), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=40,
                        num_labels=labels)
    return BertForSequenceClassification(config).eval()


def batch_of(task, indices, collate):
    examples = IndexedExamples(task.train)
    return collate([examples[i] for i in indices])


# ---- students ------------------------------------------------------------------------------------------

def test_from_teacher_copies_embeddings_head_and_skip_mapped_layers(task):
    teacher = tiny_bert(layers=4)
    student, tokenizer = build_student("from_teacher", StudentRequest(None, task, teacher, task.tokenizer, layers=2))
    assert student.config.num_hidden_layers == 2 and tokenizer is task.tokenizer
    assert student.config.id2label == dict(enumerate(task.label_names))  # the teacher's config had none
    # skip map 4 -> 2 pairs hidden states (2, 1), (4, 2): student layer 0 <- teacher layer 1, 1 <- 3
    for s, t in ((0, 1), (1, 3)):
        for (name, got), (_, want) in zip(student.bert.encoder.layer[s].state_dict().items(),
                                          teacher.bert.encoder.layer[t].state_dict().items()):
            assert torch.equal(got, want), name
    for name in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(student.state_dict()[name], teacher.state_dict()[name])
    assert copy_teacher_layers(student, teacher) == [(1, 0), (3, 1)]


def test_from_teacher_refuses_other_widths_and_deeper_students(task):
    teacher = tiny_bert(layers=4, hidden=16)
    with pytest.raises(UserError, match="hidden_size equal"):
        build_student("from_teacher", StudentRequest("bert-tiny", task, teacher, task.tokenizer))  # hidden 64
    with pytest.raises(UserError, match="more layers"):
        build_student("from_teacher", StudentRequest(None, task, teacher, task.tokenizer, layers=5))
    with pytest.raises(UserError, match="Hugging Face encoder"):
        build_student("from_teacher", StudentRequest(None, task, build_model("resnet20", num_classes=2), None))


def test_random_init_keeps_the_shape_and_draws_new_weights(task):
    pretrained, _ = build_student("pretrained", StudentRequest("bert-tiny", task, tiny_bert(), task.tokenizer))
    torch.manual_seed(1)
    fresh, _ = build_student("random", StudentRequest("bert-tiny", task, tiny_bert(), task.tokenizer))
    assert fresh.config.hidden_size == pretrained.config.hidden_size
    assert not torch.equal(fresh.classifier.weight, pretrained.classifier.weight)


# ---- teachers ------------------------------------------------------------------------------------------

def test_ensemble_averages_member_logits_and_stays_frozen(task):
    members = [tiny_bert(seed=1), tiny_bert(seed=2), tiny_bert(seed=3)]
    batch = make_collate(task, task.tokenizer)([task.train[i] for i in range(4)])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = torch.stack([m(**inputs).logits for m in members]).mean(0)
    teacher = build_teacher(members, feature_member=2)
    assert isinstance(teacher, EnsembleTeacher) and teacher.feature_model is members[2]
    teacher.train()
    assert not any(m.training for m in teacher.members) and not any(p.requires_grad for p in teacher.parameters())
    assert torch.allclose(teacher.logits(inputs), expected, atol=1e-6)
    assert torch.allclose(teacher(**inputs), expected, atol=1e-6)  # a classifier to the core's evaluation
    assert isinstance(build_teacher(members[:1]), SingleTeacher)
    with pytest.raises(UserError, match="single teacher takes one model"):
        build_teacher(members, kind="single")
    with pytest.raises(UserError, match="unknown teacher 'mixture'"):
        build_teacher(members, kind="mixture")
    with pytest.raises(UserError, match="built by `distill --moe`"):  # experts and aggregator, not members
        build_teacher(members, kind="moe")


# ---- the step ------------------------------------------------------------------------------------------

def test_cached_teacher_logits_give_the_same_loss_as_a_live_teacher(task):
    teacher, student = SingleTeacher([tiny_bert(seed=1)]), tiny_bert(layers=2, seed=2)
    collate = DistillCollate(make_collate(task, task.tokenizer))
    cache = teacher_logits(teacher, task.train, collate, batch_size=16, progress=False)
    assert cache.shape == (len(task.train), 2)
    batch = batch_of(task, [5, 17, 2, 33, 8], collate)  # other examples, other padding than the cache's batches
    kd = KDLoss("kl", temperature=2.0)
    live = DistillStep(student, teacher, kd=kd, terms=[], num_labels=2, hard_weight=0.5)(student, batch)
    cached = DistillStep(student, teacher, kd=kd, terms=[], num_labels=2, hard_weight=0.5, cached_logits=cache)
    teacher.logits = None  # the cached step must not run the teacher at all
    out = cached(student, batch)
    assert torch.allclose(out["kd"], live["kd"], atol=1e-5) and torch.allclose(out["loss"], live["loss"], atol=1e-5)
    assert torch.allclose(out["loss"], out["kd"] + out["hard"])


def test_step_sums_weighted_terms_and_trains_projections_and_critics(task):
    teacher, student = SingleTeacher([tiny_bert(layers=4, hidden=16)]), tiny_bert(layers=2, hidden=8, seed=2)
    collate = DistillCollate(make_collate(task, task.tokenizer))
    batch = batch_of(task, range(8), collate)
    s_in, t_in, _ = split_batch(batch)
    sections = [IntermediateSection(loss="hidden_mse", layer_map="skip", weight=0.5),
                IntermediateSection(loss="mi", alpha=0.9, critic="mlp", options={"hidden": 16, "out": 8})]
    terms = [build_term(sec, "sum", student, teacher.feature_model, s_in, t_in) for sec in sections]
    assert terms[0].student_paths == {0: "bert.embeddings", 1: "bert.encoder.layer.0", 2: "bert.encoder.layer.1"}
    assert terms[0].teacher_paths == {0: "bert.embeddings", 2: "bert.encoder.layer.1", 4: "bert.encoder.layer.3"}
    step = DistillStep(student, teacher, kd=KDLoss("ce"), terms=terms, num_labels=2, hard_weight=1.0)
    out = step(student, batch)
    assert set(out) == {"loss", "kd", "hard", "0:hidden_mse", "1:mi"}
    assert torch.allclose(out["loss"], out["kd"] + out["hard"] + out["0:hidden_mse"] + out["1:mi"])
    with torch.no_grad():  # the term is w_inter times the objective on hidden states read by hooks
        hidden_s = student(**{k: v for k, v in s_in.items() if k != "labels"}, output_hidden_states=True).hidden_states
        hidden_t = teacher.feature_model(**t_in, output_hidden_states=True).hidden_states
        direct = terms[0].objective(list(hidden_s), list(hidden_t), s_in["attention_mask"])
    assert torch.allclose(out["0:hidden_mse"], 0.5 * direct, atol=1e-5)
    out["loss"].backward()
    projection = terms[0].objective.pair_module(2, 1).projection
    critic = terms[1].objective.pair_module(2, 1).critic
    assert projection.weight.grad is not None and critic.student.net[0].weight.grad is not None
    assert student.bert.embeddings.word_embeddings.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    assert step.mi_k == 8 and not any(p is q for p in step.parameters() for q in teacher.parameters())
    step.close()  # transformers keeps hooks of its own; ours are gone
    assert not any("FeatureTaps" in hook.__qualname__ for hook in student.bert.encoder.layer[0]._forward_hooks.values())


def test_summary_losses_skip_the_embeddings_pair_whose_cls_vectors_are_all_alike(task):
    """[CLS] + position 0 + segment 0 is one vector for every example: an mlp MI critic on it learns nothing."""
    teacher, student = tiny_bert(layers=4, hidden=16), tiny_bert(layers=2, hidden=8, seed=2)
    s_in, t_in, _ = split_batch(batch_of(task, range(4), DistillCollate(make_collate(task, task.tokenizer))))

    def term(**section):
        return build_term(IntermediateSection(**section), "sum", student, teacher, s_in, t_in)

    mlp = term(loss="mi", alpha=0.9, critic="mlp")
    assert mlp.objective.skipped == [(0, 0)] and mlp.objective.layer_map.pairs == ((2, 1), (4, 2))
    assert 0 not in mlp.student_paths and 0 not in mlp.teacher_paths and mlp.objective.num_terms == 2
    assert not any(key.endswith("s0") for key in mlp.objective.losses)  # no critic left to train on it
    for tokens in (term(loss="hidden_mse"), term(loss="mi", alpha=0.9, critic="transformer")):
        assert tokens.objective.skipped == [] and (0, 0) in tokens.objective.layer_map.pairs
    with pytest.raises(UserError, match="no layer pair of 'mi' is left"):
        term(loss="mi", critic="mlp", layer_map="0:0")


def test_resnet_features_by_module_path():
    task = load_task_data("synthetic-image:1x16x16", max_train_samples=8, max_eval_samples=8)
    teacher = build_model("resnet32", num_classes=10, in_channels=1, image_size=16)
    student = build_model("resnet20", num_classes=10, in_channels=1, image_size=16)
    batch = DistillCollate(make_collate(task))([IndexedExamples(task.train)[i] for i in range(4)])
    s_in, t_in, index = split_batch(batch)
    assert torch.equal(index, torch.arange(4)) and set(t_in) == {"pixel_values"}
    stages = ["layer1", "layer2", "layer3"]
    term = build_term(IntermediateSection(loss="hidden_mse", teacher_layers=stages, student_layers=stages), "sum",
                      student, teacher, s_in, t_in)
    assert term.objective.layer_map.pairs == ((0, 0), (1, 1), (2, 2))
    assert term.objective.pair_module(1, 1).projection is None  # equal channels: 32 and 32
    step = DistillStep(student, SingleTeacher([teacher]), kd=KDLoss("kl", 4.0), terms=[term], num_labels=10)
    out = step(student, batch)
    assert out["0:hidden_mse"] > 0 and torch.isfinite(out["loss"])
    with pytest.raises(UserError, match="student_layers lists 1 module path"):
        build_term(IntermediateSection(loss="hidden_mse", teacher_layers=stages, student_layers=["layer3"]), "sum",
                   student, teacher, s_in, t_in)
    with pytest.raises(UserError, match="list the modules to read"):
        build_term(IntermediateSection(loss="cos"), "sum", student, teacher, s_in, t_in)


def test_separate_tokenization_feeds_the_teacher_its_own_tokens(task):
    words = list(task.tokenizer.get_vocab())
    other = BertTokenizerFast(vocab={w: i for i, w in enumerate(words[:5] + sorted(words[5:], reverse=True))})
    assert not same_tokenizer(task.tokenizer, other) and same_tokenizer(task.tokenizer, synthetic_tokenizer())
    collate = DistillCollate(make_collate(task, task.tokenizer), make_collate(task, other))
    batch = batch_of(task, range(6), collate)
    s_in, t_in, _ = split_batch(batch)
    assert not torch.equal(s_in["input_ids"], t_in["input_ids"]) and "labels" not in t_in
    assert set(collate([task.dev[0]])) == {"input_ids", "token_type_ids", "attention_mask", "labels"}  # dev: student
    teacher, student = SingleTeacher([tiny_bert(layers=4)]), tiny_bert(layers=2, hidden=8, seed=2)
    mi = build_term(IntermediateSection(loss="mi", critic="mlp"), "sum", student, teacher.feature_model, s_in, t_in)
    pkd = build_term(IntermediateSection(loss="pkd"), "sum", student, teacher.feature_model, s_in, t_in)
    token = build_term(IntermediateSection(loss="hidden_mse"), "sum", student, teacher.feature_model, s_in, t_in)
    assert alignment_free(mi.objective) and alignment_free(pkd.objective) and not alignment_free(token.objective)
    out = DistillStep(student, teacher, kd=KDLoss("ce"), terms=[mi, pkd], num_labels=2)(student, batch)
    assert torch.isfinite(out["loss"])
