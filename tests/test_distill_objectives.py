"""distill objectives: KD losses, intermediate losses, MI-α and its critics, layer maps, feature taps (spec §7)."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig, BertModel

from distill.features import FeatureTaps, attention_scores, hf_attention_paths, hf_layer_paths
from distill.objectives import (
    INTERMEDIATE_LOSSES,
    LAYER_MAPS,
    IntermediateObjective,
    MILoss,
    ProjectedLoss,
    alpha_logit,
    hard_label_loss,
    interpolated_bound,
    kl_divergence,
    log_leave_one_out_mean,
    prediction_loss,
    resolve_layer_map,
    soft_cross_entropy,
    transformer_critic,
    transport_plan,
)
from shrink.errors import UserError




def gaussian_pair(gen, k=32, d=4, rho=0.5):
    """x ~ N(0, I), y = ρx + √(1-ρ²)ε (the reference drew (1-ρ²)ε, §6.17); I(x; y) = -d/2·log(1-ρ²)."""
    x = torch.randn(k, d, generator=gen)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(k, d, generator=gen)


def brute_force_bound(scores, log_q, alpha):
    """I_α written out term by term, with explicit leave-one-out sums (an independent reference)."""
    k = scores.shape[0]
    nce = torch.empty(k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(k):
            nce[i, j] = torch.log(sum(torch.exp(scores[i, m]) for m in range(k) if m != j) / (k - 1))
    ib = torch.log(alpha * nce.exp() + (1 - alpha) * log_q.exp()[:, None])
    pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
    marg = sum(torch.exp(scores[i, j] - ib[i, i]) for i, j in pairs) / len(pairs)
    joint = sum(scores[i, i] - ib[i, j] for i, j in pairs) / len(pairs)
    return 1 + joint - marg


# ---- MI-α ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.0])
def test_mi_alpha_is_a_lower_bound_that_learns_on_correlated_gaussians(alpha):
    true_mi = -0.5 * 4 * math.log(1 - 0.5**2)  # 0.575 nats
    gen = torch.Generator().manual_seed(1)
    mi = MILoss(4, 4, alpha=alpha, critic="mlp", hidden=64, out=32)

    def average_estimate():
        with torch.no_grad():
            return sum(-mi(*gaussian_pair(gen)).item() for _ in range(200)) / 200

    assert abs(average_estimate()) < 0.1
    optimizer = torch.optim.Adam(mi.parameters(), lr=1e-3)
    for _ in range(400):
        loss = mi(*gaussian_pair(gen))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert 0.35 < average_estimate() < true_mi + 0.05
    assert mi.last_k == 32


def test_mi_alpha_saturates_at_log_k_and_its_variance_falls_with_alpha():
    k, d, rho = 32, 10, 0.9
    gen = torch.Generator().manual_seed(2)

    def optimal_scores():  # f(x, y) = log p(y|x) / p(y): the best critic
        x, y = gaussian_pair(gen, k, d, rho)
        residual = y[None, :, :] - rho * x[:, None, :]
        return (-(residual**2).sum(-1) / (2 * (1 - rho**2)) - 0.5 * d * math.log(1 - rho**2)
                + 0.5 * (y**2).sum(-1)[None, :])

    estimates = {a: torch.stack([interpolated_bound(optimal_scores(), torch.zeros(k), alpha_logit(a))
                                 for _ in range(100)]) for a in (0.0, 0.9, 1.0)}
    assert estimates[1.0].max() <= math.log(k - 1) + 1e-5
    assert (estimates[0.9] <= 1 + math.log((k - 1) / 0.9) + 1e-5).all()
    assert estimates[0.9].mean() > math.log(k - 1)  # α < 1 escapes InfoNCE's ceiling
    assert estimates[0.0].std() > estimates[1.0].std()


def test_mi_alpha_endpoints_are_infonce_and_tuba():
    k = 6
    scores, log_q = torch.randn(k, k, dtype=torch.float64), torch.randn(k, dtype=torch.float64)
    for alpha in (0.0, 0.3, 1.0):
        assert torch.allclose(interpolated_bound(scores, log_q, alpha_logit(alpha)),
                              brute_force_bound(scores, log_q, alpha).float(), atol=1e-5)
    tuba = 1 + (scores.diagonal() - log_q).mean() - torch.exp(scores - log_q[:, None])[~torch.eye(k, dtype=bool)].mean()
    assert torch.allclose(interpolated_bound(scores, log_q, alpha_logit(0.0)), tuba.float(), atol=1e-6)
    for alpha, endpoint in ((1e-6, 0.0), (1 - 1e-6, 1.0)):
        near = interpolated_bound(scores, log_q, alpha_logit(alpha))
        assert abs(near - interpolated_bound(scores, log_q, alpha_logit(endpoint))) < 1e-3
    # a critic that scores only the positives saturates InfoNCE at log(K-1)
    saturated = interpolated_bound(50.0 * torch.eye(32), torch.zeros(32), alpha_logit(1.0))
    assert abs(saturated - math.log(31)) < 1e-4


def test_leave_one_out_mean_is_exact_when_one_score_dominates():
    scores = torch.randn(5, 5)
    scores[2, 3] = 1e4
    scores.requires_grad_(True)
    loo = log_leave_one_out_mean(scores)
    for j in range(5):
        kept = torch.cat([scores[2, :j], scores[2, j + 1:]]).detach()
        assert torch.allclose(loo[2, j], kept.logsumexp(0) - math.log(4), rtol=1e-5)
    loo.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_nwj_alias_uses_a_constant_baseline_of_one():
    nwj = INTERMEDIATE_LOSSES.get("nwj")(4, 4)
    x, y = gaussian_pair(torch.Generator().manual_seed(3), k=8)
    scores = nwj.critic(x, y)
    expected = 1 + (scores.diagonal() - 1).mean() - torch.exp(scores - 1)[~torch.eye(8, dtype=bool)].mean()
    assert torch.allclose(-nwj(x, y), expected, atol=1e-6)
    assert nwj.critic.baseline is None and INTERMEDIATE_LOSSES.get("infonce")(4, 4).critic.baseline is None


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(UserError, match="alpha in \\[0, 1\\]"):
        MILoss(4, 4, alpha=alpha)
    with pytest.raises(UserError, match="alpha in \\[0, 1\\]"):
        IntermediateObjective("mi", "skip", 4, 2, 8, 8, alpha=alpha)


def test_transformer_critic_scores_examples_against_examples():
    batch, length = 3, 5
    critic = transformer_critic(16, 24, heads=8, with_baseline=True).eval()
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 3:] = 0
    student, teacher = torch.randn(batch, length, 16), torch.randn(batch, length, 24)
    scores = critic(student, teacher, mask)
    assert scores.shape == (batch, batch)
    assert critic.log_baseline(teacher, mask).shape == (batch,)
    changed = student.clone()
    changed[0, 3:] = 100.0  # padding must not change any score
    assert torch.allclose(critic(changed, teacher, mask), scores, atol=1e-5)
    loss = MILoss(16, 24, alpha=0.9, critic="transformer", heads=8)(student, teacher, mask)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_losses_stay_fp32_under_autocast():
    z_s, z_t = torch.randn(4, 3), torch.randn(4, 3)
    x, y = gaussian_pair(torch.Generator().manual_seed(4), k=8)
    mi = MILoss(4, 4, alpha=0.9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kd = prediction_loss("kl", temperature=2.0)(z_s.bfloat16(), z_t.bfloat16())
        bound = mi(x, y)
    assert kd.dtype == torch.float32 and bound.dtype == torch.float32
    assert torch.allclose(bound, mi(x, y), atol=1e-6)


def _gather_worker(rank, world, folder):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    torch.manual_seed(0)
    mi = MILoss(4, 4, alpha=0.5, hidden=16, out=8)
    x, y = gaussian_pair(torch.Generator().manual_seed(10), k=8)
    shard = slice(0, 5) if rank == 0 else slice(5, 8)  # uneven batches, as at the end of an epoch
    loss = mi(x[shard], y[shard])
    loss.backward()
    grads = {f"grad.{name}": p.grad for name, p in mi.named_parameters()}
    save_file({"loss": loss.detach().reshape(1), "k": torch.tensor([mi.last_k]), **grads},
              os.path.join(folder, f"rank{rank}.safetensors"))
    dist.destroy_process_group()


def test_negatives_are_gathered_across_processes(tmp_path):
    torch.multiprocessing.spawn(_gather_worker, args=(2, str(tmp_path)), nprocs=2)
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    torch.manual_seed(0)
    mi = MILoss(4, 4, alpha=0.5, hidden=16, out=8)
    x, y = gaussian_pair(torch.Generator().manual_seed(10), k=8)
    loss = mi(x, y)
    loss.backward()
    for result in ranks:
        assert result["k"].item() == 8 and torch.allclose(result["loss"], loss.detach(), atol=1e-5)
    for name, param in mi.named_parameters():  # what DDP's gradient averaging then yields
        averaged = (ranks[0][f"grad.{name}"] + ranks[1][f"grad.{name}"]) / 2
        assert torch.allclose(averaged, param.grad, atol=1e-5), name


# ---- intermediate losses --------------------------------------------------------------------------------

def test_intermediate_losses_vanish_on_identical_features():
    hidden = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    for name in ("hidden_mse", "cos", "pkd"):
        assert INTERMEDIATE_LOSSES.get(name)(8, 8)(hidden, hidden, mask).abs() < 1e-6, name
    scores = torch.randn(3, 2, 5, 5)
    assert INTERMEDIATE_LOSSES.get("attention_mse")(2, 2)(scores, scores, mask) == 0
    p = F.softmax(hidden, -1)
    entropy = -(p * p.log()).sum(-1)
    mean_entropy = (entropy * mask).sum() / mask.sum()
    assert torch.allclose(INTERMEDIATE_LOSSES.get("hidden_ce")(8, 8)(hidden, hidden, mask), mean_entropy)


def test_token_losses_ignore_padding_and_attention_ignores_masked_scores():
    teacher, student = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    noisy = student.clone()
    noisy[1, 2:] += 10.0
    for name in ("hidden_mse", "hidden_ce", "cos"):
        loss = INTERMEDIATE_LOSSES.get(name)(8, 8)
        assert torch.allclose(loss(student, teacher, mask), loss(noisy, teacher, mask)), name
    scores = torch.randn(2, 3, 4, 4)
    masked = scores.clone()
    masked[..., 3] = -10000.0  # TinyBERT's additive mask: compared as 0
    reference = scores.clone()
    reference[..., 3] = 0.0
    attention = INTERMEDIATE_LOSSES.get("attention_mse")(3, 3)
    assert torch.allclose(attention(masked, scores), F.mse_loss(reference, scores))
    with pytest.raises(UserError, match="equal head counts"):
        INTERMEDIATE_LOSSES.get("attention_mse")(4, 12)


def test_projections_one_per_pair_only_when_widths_differ():
    objective = IntermediateObjective("hidden_mse", "skip", n_teacher=4, n_student=2, d_student=64, d_teacher=128)
    projections = [m.projection for m in objective.losses.values()]
    assert len(projections) == 3 and len({id(p) for p in projections}) == 3
    weights = torch.cat([p.weight.flatten() for p in projections])
    assert abs(weights.std().item() - 0.02) < 0.001 and all((p.bias == 0).all() for p in projections)
    equal = IntermediateObjective("cos", "skip", 4, 2, 64, 64)
    assert all(m.projection is None for m in equal.losses.values())
    mi = IntermediateObjective("mi", "skip", 4, 2, 64, 128)
    assert not any(isinstance(m, ProjectedLoss) for m in mi.modules())
    assert len(mi.losses) == 1 and mi.pair_module(0, 0) is mi.pair_module(4, 2)  # one shared critic
    assert len(IntermediateObjective("mi", "emd", 4, 2, 64, 128).losses) == 4 * 2 + 1


def test_objective_trains_its_own_projections_and_critics():
    student = [torch.randn(6, 3, 8, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(6, 3, 16) for _ in range(5)]
    for loss in ("hidden_mse", "mi"):
        objective = IntermediateObjective(loss, "skip", 4, 2, 8, 16)
        optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
        before = [p.detach().clone() for p in objective.parameters()]
        objective(student, teacher).backward()
        optimizer.step()
        assert all(not torch.equal(b, p) for b, p in zip(before, objective.parameters())), loss
        assert all(s.grad is not None for s in student)
        assert objective.last_k == (6 if loss == "mi" else None)


def test_sum_and_mean_over_pairs_and_wrong_feature_counts():
    student = [torch.randn(2, 3, 8) for _ in range(3)]
    teacher = [torch.randn(2, 3, 8) for _ in range(5)]
    summed = IntermediateObjective("hidden_mse", "skip", 4, 2, 8, 8)
    expected = sum(F.mse_loss(student[s], teacher[t]) for t, s in ((0, 0), (2, 1), (4, 2)))
    assert torch.allclose(summed(student, teacher), expected) and summed.num_terms == 3
    mean = IntermediateObjective("hidden_mse", "skip", 4, 2, 8, 8, reduction="mean")
    assert torch.allclose(mean(student, teacher), expected / 3)
    with pytest.raises(UserError, match="teacher gave 4 feature tensors but has 4 layers"):
        summed(student, teacher[:4])


def test_emd_weights_layer_costs_by_the_transport_flow():
    cost = torch.rand(2, 4).numpy()
    flow = transport_plan(cost)
    assert flow.sum(1) == pytest.approx([0.5, 0.5]) and flow.sum(0) == pytest.approx([0.25] * 4)
    assert transport_plan(cost - 5.0) == pytest.approx(flow, abs=1e-9)  # costs may be negative (MI)
    diagonal = transport_plan(torch.tensor([[0.0, 1.0], [1.0, 0.0]]).numpy())
    assert diagonal == pytest.approx(torch.tensor([[0.5, 0.0], [0.0, 0.5]]).numpy())
    student = [torch.randn(2, 3, 8) for _ in range(3)]
    teacher = [torch.randn(2, 3, 8) for _ in range(5)]
    objective = IntermediateObjective("hidden_mse", "emd", 4, 2, 8, 8)
    loss = objective(student, teacher)
    costs = torch.stack([torch.stack([F.mse_loss(student[s], teacher[t]) for t in range(1, 5)]) for s in (1, 2)])
    expected = (objective.last_flow * costs).sum() + F.mse_loss(student[0], teacher[0])
    assert torch.allclose(loss, expected)
    with pytest.raises(UserError, match="emd layer map works with"):
        IntermediateObjective("cos", "emd", 4, 2, 8, 8)


# ---- layer maps ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_teacher,n_student,skip,last_first,attention", [
    (12, 4, [(0, 0), (3, 1), (6, 2), (9, 3), (12, 4)], 8, [2, 5, 8, 11]),
    (12, 6, [(0, 0), (2, 1), (4, 2), (6, 3), (8, 4), (10, 5), (12, 6)], 6, [1, 3, 5, 7, 9, 11]),
    (12, 2, [(0, 0), (6, 1), (12, 2)], 10, [5, 11]),
    (24, 4, [(0, 0), (6, 1), (12, 2), (18, 3), (24, 4)], 20, [5, 11, 17, 23]),
])
def test_layer_maps_match_the_spec_table(n_teacher, n_student, skip, last_first, attention):
    assert list(resolve_layer_map("skip", n_teacher, n_student).pairs) == skip
    last = [(last_first + i, i) for i in range(n_student + 1)]
    assert list(resolve_layer_map("last", n_teacher, n_student).pairs) == last and last[-1][0] == n_teacher
    tinybert = resolve_layer_map("tinybert_attention", n_teacher, n_student, features="attention")
    assert list(tinybert.pairs) == list(zip(attention, range(n_student)))


def test_skip_map_uses_integer_floor_and_reaches_the_last_layer():
    pairs = resolve_layer_map("skip", 15, 11).pairs
    assert pairs[-1] == (15, 11) and [t for t, _ in pairs] == [i * 15 // 11 for i in range(12)]


def test_layer_maps_refuse_layers_the_models_do_not_have():
    assert resolve_layer_map("0:0, 6:2, 12:4", 12, 4).pairs == ((0, 0), (6, 2), (12, 4))
    with pytest.raises(UserError, match="teacher hidden layer 13, but the teacher has 12 layers"):
        resolve_layer_map("0:0,13:4", 12, 4)
    with pytest.raises(UserError, match="student hidden layer 6, but the student has 4 layers"):
        resolve_layer_map("12:6", 12, 4)
    with pytest.raises(UserError, match="teacher hidden layer -2, but the teacher has 2 layers"):
        resolve_layer_map("last", 2, 4)
    with pytest.raises(UserError, match="unknown layer map 'skp'; did you mean 'skip'"):
        resolve_layer_map("skp", 12, 4)
    with pytest.raises(UserError, match="needs attention layers"):
        IntermediateObjective("attention_mse", "skip", 12, 4, 12, 12)
    assert set(LAYER_MAPS.names()) == {"emd", "last", "skip", "tinybert", "tinybert_attention"}


# ---- prediction-layer losses ---------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_losses_satisfy_their_identities(temperature):
    z_s = torch.randn(8, 5, requires_grad=True)
    z_t = torch.randn(8, 5)
    p_t = F.softmax(z_t / temperature, -1)
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    kl = (p_t * (p_t.log() - F.log_softmax(z_s / temperature, -1))).sum(-1).mean()
    ce = soft_cross_entropy(z_s, z_t, temperature)
    assert torch.allclose(ce - kl, entropy, atol=1e-5)
    assert torch.allclose(kl_divergence(z_s, z_t, temperature), temperature**2 * kl, atol=1e-5)
    grad_ce, = torch.autograd.grad(ce, z_s)
    grad_kl, = torch.autograd.grad(kl_divergence(z_s, z_t, temperature) / temperature**2, z_s)
    assert torch.allclose(grad_ce, grad_kl, atol=1e-6)
    for name in ("kl", "mse"):
        assert prediction_loss(name, temperature)(z_t, z_t).abs() < 1e-6
    assert torch.allclose(soft_cross_entropy(z_t, z_t, temperature), entropy, atol=1e-6)


def test_soft_ce_with_a_temperature_warns_about_the_missing_t_squared():
    with pytest.warns(UserWarning, match="no T² factor"):
        prediction_loss("ce", temperature=4.0)
    assert prediction_loss("kl", temperature=4.0).name == "kl"


def test_regression_must_use_mse():
    z_s = torch.randn(6, 1, requires_grad=True)
    loss = soft_cross_entropy(z_s, torch.randn(6, 1))
    grad, = torch.autograd.grad(loss, z_s)
    assert loss == 0 and (grad == 0).all()  # why ce is refused: it never teaches a regression head
    assert prediction_loss(None, num_labels=1).name == "mse" and prediction_loss(None).name == "ce"
    for name in ("ce", "kl"):
        with pytest.raises(UserError, match="a regression task needs the mse KD loss"):
            prediction_loss(name, num_labels=1)
    labels = torch.randn(6)
    assert torch.allclose(hard_label_loss(z_s, labels, num_labels=1), F.mse_loss(z_s.view(-1), labels))


def test_kd_refuses_mismatched_label_sets():
    with pytest.raises(UserError, match="same label set"):
        prediction_loss("kl")(torch.randn(2, 3), torch.randn(2, 2))
    with pytest.raises(UserError, match="unknown prediction loss 'kld'; did you mean 'kl'"):
        prediction_loss("kld")


# ---- features by module path ---------------------------------------------------------------------------

class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean((2, 3)))


def test_feature_taps_read_cnn_features_by_path():
    model = TinyCNN()
    images = torch.randn(2, 3, 6, 6)
    with FeatureTaps(model, ["stem", "layer1.0"]) as taps:
        model(images)
        stem, conv = taps.features()
    assert torch.equal(stem, model.stem(images)) and torch.equal(conv, model.layer1[0](stem))
    assert not model._forward_hooks and not model.stem._forward_hooks  # hooks removed on exit
    objective = IntermediateObjective("hidden_mse", "0:0,1:1", 1, 1, d_student=[4, 8], d_teacher=[4, 8])
    assert objective({0: stem, 1: conv}, {0: stem, 1: conv}) < 1e-6  # feature maps compare as H·W tokens
    with pytest.raises(UserError, match="no module 'layer2'.*close: layer1"):
        FeatureTaps(model, ["layer2"])


def test_feature_taps_on_a_bert_match_hidden_states_and_attention():
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=16, attn_implementation="eager")
    model = BertModel(config).eval()
    ids = torch.randint(0, 50, (2, 7))
    paths = hf_layer_paths(model)
    assert paths == ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    query, key = hf_attention_paths(model)[1]
    with FeatureTaps(model, [*paths, query, key]) as taps:
        out = model(ids, output_hidden_states=True, output_attentions=True)
        for i, path in enumerate(paths):
            assert torch.allclose(taps[path], out.hidden_states[i])
        scores = attention_scores(taps[query], taps[key], config.num_attention_heads)
    assert torch.allclose(scores.softmax(-1), out.attentions[1], atol=1e-6)
    with pytest.raises(UserError, match="not a Hugging Face model"):
        hf_layer_paths(TinyCNN())


def test_feature_zero_of_a_model_with_projected_embeddings_is_hidden_state_zero():
    """ELECTRA-small's embeddings (128) are projected up to the hidden size (256) before layer 0."""
    from transformers import ElectraConfig, ElectraForSequenceClassification

    config = ElectraConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=24, max_position_embeddings=16, num_labels=2)
    model = ElectraForSequenceClassification(config).eval()
    paths = hf_layer_paths(model)
    assert paths[0] == "electra.embeddings_project"
    with FeatureTaps(model, paths) as taps:
        out = model(torch.randint(0, 50, (2, 7)), output_hidden_states=True)
        for i, path in enumerate(paths):
            assert torch.allclose(taps[path], out.hidden_states[i]), path


def test_mi_alpha_on_a_one_example_batch_adds_nothing_instead_of_failing():
    """An epoch's last batch can hold one example (N mod B == 1); training must go on through it."""
    mi = MILoss(8, 6, alpha=0.9)
    assert mi(torch.randn(4, 5, 8), torch.randn(4, 5, 6)).item() != 0.0 and mi.last_mi is not None
    student = torch.randn(1, 5, 8, requires_grad=True)
    loss = mi(student, torch.randn(1, 5, 6))
    loss.backward()
    # no estimate for this batch, and none left over from the previous one
    assert loss.item() == 0.0 and mi.last_k == 1 and mi.last_mi is None and student.grad is not None
