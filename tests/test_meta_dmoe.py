"""Meta-DMoE (distill.moe): the spec's §7.5 unit tests u1-u6, disjoint support/query, the multi-process
meta-gradient, and bad input. Tiny convnets on generated multi-domain images; one thread."""
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from distill.moe.adapt import MetaStudent, evaluate_domains, predict_domain
from distill.moe.aggregator import Aggregator
from distill.moe.config import MetaSection
from distill.moe.experts import ExpertPool, drop_expert
from distill.moe.metatrain import make_episode, meta_gradients, meta_loss, meta_parameters, meta_train
from distill.teachers.meta_dmoe import MetaDMoETeacher
from shrink.data import load_task_data, make_collate
from shrink.data.domains import DomainBatchSampler, split_by_domains, split_domains
from shrink.errors import UserError
from shrink.models import build_model

TARGETS = ["t0", "t1"]


def tiny_setup(seed=0, student_widths=(4, 8), experts=2):
    """Generated domains, `experts` random convnet experts, an aggregator and a convnet student (seeded)."""
    task = load_task_data("synthetic-domains:12", seed=seed)
    split = split_by_domains(task, TARGETS, seed=seed)
    torch.manual_seed(seed)
    members = [build_model("convnet", num_classes=10, widths=[4, 8]) for _ in range(experts)]
    aggregator = Aggregator(dim=8, n_out=10, heads=2)
    teacher = MetaDMoETeacher(members, aggregator=aggregator, domain_to_expert=split_domains(split.sources, experts, 0))
    student = MetaStudent(build_model("convnet", num_classes=10, widths=list(student_widths)), teacher, alpha=0.1,
                          support=8)
    return task, split, teacher, student, make_collate(task)


def episodes_for(split, teacher, collate, indices):
    sampler = DomainBatchSampler(split.train_domains, 5, 5, steps=10, seed=3)
    return [make_episode(split.train, sampler.task(i), collate, teacher) for i in indices]


def bn_buffers(module):
    return {name: buffer.clone() for name, buffer in module.named_buffers()}


def test_u1_drop_mask_removes_exactly_the_in_cluster_expert():
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    dropped = drop_expert(tokens, exclude=2, mask="drop")
    assert dropped.shape == (2, 3, 3)
    assert torch.equal(dropped, tokens[:, [0, 1, 3]])
    zeroed = drop_expert(tokens, exclude=2, mask="zero")
    assert zeroed.shape == tokens.shape and zeroed[:, 2].abs().sum() == 0 and torch.equal(zeroed[:, 3], tokens[:, 3])
    assert torch.equal(drop_expert(tokens, exclude=None), tokens)
    with pytest.raises(UserError):
        drop_expert(tokens, 0, mask="hide")


def test_aggregator_is_permutation_invariant_takes_n_minus_1_tokens_and_checks_heads():
    torch.manual_seed(0)
    aggregator = Aggregator(dim=8, n_out=3, heads=2).eval()
    tokens = torch.randn(5, 4, 8)
    shuffled = tokens[:, [2, 0, 3, 1]]
    assert torch.allclose(aggregator.get_feat(tokens), aggregator.get_feat(shuffled), atol=1e-6)
    assert aggregator.get_feat(tokens[:, :3]).shape == (5, 8)
    with pytest.raises(UserError, match="do not divide"):
        Aggregator(dim=10, n_out=3, heads=4)


def test_u2_aggregator_gradient_is_second_order_only():
    _, split, teacher, student, collate = tiny_setup()
    episode = episodes_for(split, teacher, collate, [0])[0]
    assert episode.exclude is not None
    meta_loss(student, teacher, episode, alpha=0.1, first_order=False).backward()
    second = sum(float(p.grad.abs().sum()) for p in teacher.trainable() if p.grad is not None)
    assert second > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.feature_params().values())
    for param in [*teacher.trainable(), *student.parameters()]:
        param.grad = None
    meta_loss(student, teacher, episode, alpha=0.1, first_order=True).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in teacher.trainable())
    with pytest.raises(UserError, match="exactly zero"):
        meta_train(student, teacher, split.train, split.train_domains, collate,
                   MetaSection(steps=1, first_order=True, support=8, query=8))


def test_u3_adapt_on_unlabeled_data_leaves_the_base_student_unchanged():
    task, split, teacher, student, collate = tiny_setup()
    images = torch.stack([split.targets["t0"][i]["pixel_values"] for i in range(8)])
    before = {name: value.clone() for name, value in student.state_dict().items()}
    params = student.adapt({"pixel_values": images})  # no labels anywhere
    assert set(params) == set(student.feature_params())
    assert any(not torch.equal(params[n], p) for n, p in student.feature_params().items())
    assert all(not value.requires_grad for value in params.values())
    for name, value in student.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert student.logits({"pixel_values": images}, params).shape == (8, 10)


def test_u4_no_adapted_state_leaks_across_domains():
    _, split, teacher, student, collate = tiny_setup()
    alone = predict_domain(student, split.targets["t1"], collate)
    state = {name: value.clone() for name, value in student.state_dict().items()}
    scores = evaluate_domains(student, {"t0": split.targets["t0"], "t1": split.targets["t1"]}, collate)
    assert set(scores) == {"t0", "t1", "mean"}
    after = predict_domain(student, split.targets["t1"], collate)
    assert torch.equal(alone, after)
    assert all(torch.equal(value, state[name]) for name, value in student.state_dict().items())
    unadapted = predict_domain(student, split.targets["t1"], collate, adapt=False)
    assert not torch.equal(unadapted, alone)


def test_u5_batchnorm_buffers_bit_identical_after_meta_steps_and_tta():
    _, split, teacher, student, collate = tiny_setup()
    buffers = bn_buffers(student), bn_buffers(teacher)
    meta_train(student, teacher, split.train, split.train_domains, collate,
               MetaSection(steps=3, support=5, query=5, eval_every=0, alpha=0.1))
    predict_domain(student, split.targets["t0"], collate)
    for module, saved in zip((student, teacher), buffers):
        for name, buffer in module.named_buffers():
            assert torch.equal(buffer, saved[name]), name
    assert student.meta_trained


def test_model_selection_scores_the_start_and_keeps_it_when_meta_training_only_loses():
    # A too-large alpha can make every meta-trained candidate worse than ERM + one step; the start must compete.
    _, split, teacher, student, collate = tiny_setup()
    start = {name: value.clone() for name, value in student.state_dict().items()}
    scores = iter([0.9, 0.5, 0.4])
    result = meta_train(student, teacher, split.train, split.train_domains, collate,
                        MetaSection(steps=2, support=5, query=5, eval_every=1, alpha=0.1), select=lambda: next(scores))
    assert [row["step"] for row in result.history] == [0, 1, 2] and result.history[0]["meta_loss"] is None
    assert (result.best_step, result.best_score) == (0, 0.9)
    assert all(torch.equal(value, start[name]) for name, value in student.state_dict().items())


def test_convnet_pool_blocks_sets_the_resolution_of_every_block():
    # The spec's net (3x conv-BN-ReLU at full resolution, then global pooling) is pool_blocks=0.
    shapes = {}
    for pool_blocks in (0, 1, 2):
        model = build_model("convnet", num_classes=10, widths=[4, 8, 8], pool_blocks=pool_blocks)
        last = model.features[:-2](torch.zeros(1, 3, 16, 16)).shape[-1]  # before global pooling
        shapes[pool_blocks] = (last, sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()))
        assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
    assert shapes == {0: (16, 0), 1: (8, 1), 2: (4, 2)}
    with pytest.raises(UserError, match="pool_blocks"):
        build_model("convnet", num_classes=10, pool_blocks=-1)


def test_u6_tta_reads_all_n_experts_and_meta_training_n_minus_1():
    _, split, teacher, student, collate = tiny_setup(experts=3)
    seen = []
    handle = teacher.aggregator.blocks.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].shape[1]))
    predict_domain(student, split.targets["t0"], collate)
    assert seen == [3]
    meta_loss(student, teacher, episodes_for(split, teacher, collate, [0])[0], alpha=0.1)
    handle.remove()
    assert seen == [3, 2]


def test_support_and_query_never_overlap_and_domains_are_drawn_uniformly():
    domains = ["big"] * 200 + ["small"] * 10
    sampler = DomainBatchSampler(domains, support=6, query=6, steps=400, seed=0)
    picked = {"big": 0, "small": 0}
    for task in sampler:
        assert not set(task.support) & set(task.query)
        assert {domains[i] for i in task.support + task.query} == {task.domain}
        picked[task.domain] += 1
    assert 150 < picked["small"] < 250  # uniform over domains, not over examples
    short = sampler.task(next(i for i in range(400) if sampler.task(i).domain == "small"))
    assert len(short.support) + len(short.query) == 10


def test_student_with_another_feature_size_gets_a_projector_and_plain_forward_warns():
    _, split, teacher, student, collate = tiny_setup(student_widths=(4, 6))
    assert student.projector is not None and "projector.weight" in student.feature_params()
    meta_train(student, teacher, split.train, split.train_domains, collate,
               MetaSection(steps=1, support=5, query=5, eval_every=0, alpha=0.1))
    with pytest.warns(UserWarning, match="unadapted"):
        student(torch.zeros(2, 3, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        student.logits({"pixel_values": torch.zeros(2, 3, 16, 16)})


def test_bad_input_is_refused_in_one_line():
    task = load_task_data("synthetic-domains:4")
    with pytest.raises(UserError, match="do not exist"):
        split_by_domains(task, ["t99"])
    with pytest.raises(UserError, match="at least 5 source domains"):
        split_domains(["a", "b", "c", "d"], 5, seed=0)
    with pytest.raises(UserError, match="no domain column"):
        split_by_domains(load_task_data("synthetic-image:1x8x8", max_train_samples=8, max_eval_samples=4), ["0"])
    experts = [build_model("convnet", num_classes=10, widths=[4]), build_model("convnet", num_classes=3, widths=[4])]
    with pytest.raises(UserError, match="different label sets"):
        ExpertPool(experts)


# --------------------------------------------------------------------------- several processes
WORKER = """
import sys, torch, torch.distributed as dist
from safetensors.torch import save_file
sys.path.insert(0, {tests!r})
from test_meta_dmoe import tiny_setup, episodes_for
from distill.moe.metatrain import meta_gradients, meta_parameters
torch.set_num_threads(1)
dist.init_process_group("gloo")
_, split, teacher, student, collate = tiny_setup()
params = meta_parameters(student, teacher, False)
rank = dist.get_rank()
loss = meta_gradients(student, teacher, episodes_for(split, teacher, collate, [rank]), 0.1, params)
if rank == 0:
    save_file({{str(i): p.grad.contiguous() for i, p in enumerate(params)}}, {out!r}, metadata={{"loss": str(loss)}})
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_give_the_meta_gradient_of_one_process_with_both_tasks(tmp_path):
    script, out = tmp_path / "worker.py", tmp_path / "grads.safetensors"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(free_port()), str(script)],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    _, split, teacher, student, collate = tiny_setup()
    params = meta_parameters(student, teacher, False)
    loss = meta_gradients(student, teacher, episodes_for(split, teacher, collate, [0, 1]), 0.1, params)
    distributed = load_file(out)
    for index, param in enumerate(params):
        assert torch.allclose(distributed[str(index)], param.grad, atol=1e-6, rtol=1e-5), index
    assert abs(float(safe_open(str(out), "pt").metadata()["loss"]) - loss) < 1e-6


def test_pooled_features_of_resnets_vits_and_bert_and_a_text_meta_step():
    from distill.moe.experts import pooled_features
    from distill.moe.metatrain import Episode
    from shrink.data.synthetic import synthetic_tokenizer
    from shrink.models import create_model

    for name in ("resnet20", "vit-micro"):
        model = build_model(name, num_classes=3, in_channels=3, image_size=16).eval()
        feature, logits = pooled_features(model, {"pixel_values": torch.randn(2, 3, 16, 16)})
        assert feature.shape == (2, 64) and logits.shape == (2, 3)
    tokenizer = synthetic_tokenizer()
    berts = [create_model("bert-tiny", num_classes=2, tokenizer_fallback=tokenizer)[0].eval() for _ in range(3)]
    batch = dict(tokenizer(["good movie", "bad plot"], return_tensors="pt"))
    feature, _ = pooled_features(berts[0].eval(), batch)
    teacher = MetaDMoETeacher(berts[:2], aggregator=Aggregator(feature.shape[1], 2, heads=2),
                              domain_to_expert={"a": 0, "b": 1})
    student = MetaStudent(berts[2], teacher, alpha=0.01)  # eval mode, as in meta-training: fused attention
    meta_loss(student, teacher, Episode("a", batch, {**batch, "labels": torch.tensor([1, 0])}, 0), 0.01).backward()
    assert sum(float(p.grad.abs().sum()) for p in teacher.trainable() if p.grad is not None) > 0
    assert set(student.adapt(batch)) == set(student.feature_params())
