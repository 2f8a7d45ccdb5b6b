"""The training engine: learning, gradient accumulation, pluggable steps, best-model keeping, resume."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from shrink.errors import UserError
from shrink.recipe import TrainConfig
from shrink.runs import RunDir
from shrink.train import EpochSampler, Trainer, forward_logits, supervised_loss, text_lengths


class Blobs(torch.utils.data.Dataset):
    """Two Gaussian blobs in 8 dimensions, as image-style examples."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=gen)
        self.x = torch.randn(n, 8, generator=gen) + 1.5 * (2 * self.labels[:, None] - 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        # a random flip of one feature's sign as "augmentation", drawn from the global RNG
        x = self.x[i].clone()
        if torch.rand(()) < 0.1:
            x[0] = -x[0]
        return {"pixel_values": x, "label": int(self.labels[i])}


def collate(items):
    return {"pixel_values": torch.stack([it["pixel_values"] for it in items]),
            "labels": torch.tensor([it["label"] for it in items])}


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def config(**kw):
    base = dict(epochs=3, batch_size=16, lr=0.01, progress=False, seed=7, warmup_ratio=0.1)
    base.update(kw)
    return TrainConfig(**base)


def make_trainer(run=None, resume=False, model=None, **kw):
    return Trainer(model or mlp(), Blobs(160, 0), Blobs(64, 1), collate=collate, metrics=("accuracy",),
                   config=config(**kw), run=run, resume=resume, save_model=save_state_dict)


def save_state_dict(model, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "w.pt")


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_learns_and_reports_history():
    result = make_trainer().fit()
    assert result.best["accuracy"] > 0.9
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.steps == 30 and result.train_samples_per_s > 0


def test_gradient_accumulation_matches_a_bigger_batch():
    big = make_trainer(batch_size=32, max_grad_norm=None, epochs=1)
    big.model[2].p = 0.0
    big.fit()
    small = make_trainer(batch_size=16, grad_accum=2, max_grad_norm=None, epochs=1)
    small.model[2].p = 0.0
    small.fit()
    assert big.progress.step == small.progress.step == 5
    assert torch.allclose(weights(big.model), weights(small.model), atol=1e-5)


def test_same_seed_same_result_and_other_seed_differs():
    a, b, c = make_trainer(), make_trainer(), make_trainer(seed=8)
    for t in (a, b, c):
        t.fit()
    assert torch.equal(weights(a.model), weights(b.model))
    assert not torch.equal(weights(a.model), weights(c.model))


class DistillLikeStep(nn.Module):
    """A step with its own trainable parameters (like a projection head of an intermediate loss)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, model, batch):
        logits = forward_logits(model, batch) * self.scale
        loss = supervised_loss(logits, batch["labels"])
        return {"loss": loss, "ce": loss.detach()}


def test_a_step_module_is_trained_with_the_model():
    step = DistillLikeStep()
    trainer = Trainer(mlp(), Blobs(160, 0), Blobs(64, 1), collate=collate, config=config(epochs=1), step=step)
    trainer.fit()
    assert step.scale.item() != 0.5


def test_resume_after_a_crash_mid_epoch_reaches_the_same_weights(tmp_path, monkeypatch):
    reference = make_trainer(run=RunDir.create(tmp_path / "ref"), checkpoint_every=4)
    ref_result = reference.fit()

    crashing = make_trainer(run=RunDir.create(tmp_path / "run"), checkpoint_every=4)
    calls = {"n": 0}
    original = Trainer._forward

    def crash_on_call_15(self, batch):
        calls["n"] += 1
        if calls["n"] == 15:  # epoch 2, after the step-12 checkpoint and two unsaved steps
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_forward", crash_on_call_15)
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    monkeypatch.setattr(Trainer, "_forward", original)
    saved = json.loads((tmp_path / "run/checkpoints/step-00000012/progress.json").read_text())
    assert saved["epoch"] == 1 and saved["batches_in_epoch"] == 2

    resumed = make_trainer(run=RunDir(tmp_path / "run"), resume=True, checkpoint_every=4)
    result = resumed.fit()
    assert torch.equal(weights(resumed.model), weights(reference.model))
    assert result.best == ref_result.best and result.history == ref_result.history
    assert len(list((tmp_path / "run/checkpoints").glob("step-*"))) == 2  # keep_checkpoints


def test_grouping_by_length_pads_less_and_keeps_every_example_once_in_a_seeded_order():
    gen = torch.Generator().manual_seed(0)
    texts = ["x" * int(n) for n in torch.randint(1, 200, (1000,), generator=gen)]
    lengths = text_lengths([{"text": text, "text_pair": None} for text in texts])

    def batches(sampler, epoch):
        sampler.epoch = epoch
        order = [index for _, index in sampler]
        return [order[i:i + 16] for i in range(0, len(order), 16)]

    grouped, plain = EpochSampler(1000, 3, lengths=lengths, batch_size=16), EpochSampler(1000, 3)
    for epoch in (0, 1):
        cut = batches(grouped, epoch)
        assert sorted(i for batch in cut for i in batch) == list(range(1000))  # a permutation
        assert len(cut[-1]) == 1000 % 16 and cut[-1] == batches(grouped, epoch)[-1]  # partial batch last, seeded
        padded = sum(len(b) * max(lengths[i] for i in b) for b in cut)
        plain_padded = sum(len(b) * max(lengths[i] for i in b) for b in batches(plain, epoch))
        assert padded < 0.6 * plain_padded  # the point: far fewer padded positions
    assert batches(grouped, 0) != batches(grouped, 1)  # each epoch draws its own grouping
    with pytest.raises(UserError, match="not text"):
        text_lengths(Blobs(4, 0))


def test_corrupt_checkpoint_is_one_clear_error(tmp_path):
    make_trainer(run=RunDir.create(tmp_path / "run"), epochs=1).fit()
    latest = sorted((tmp_path / "run/checkpoints").glob("step-*"))[-1]
    for f in latest.glob("*.safetensors"):
        f.write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        make_trainer(run=RunDir(tmp_path / "run"), resume=True, epochs=2).fit()


def test_a_stop_after_the_final_steps_checkpoint_is_resumed_with_its_evaluation(tmp_path, monkeypatch):
    reference = make_trainer(run=RunDir.create(tmp_path / "ref"), checkpoint_every=10).fit()
    original = Trainer._end_epoch
    calls = {"n": 0}

    def stop_before_the_last_evaluation(self, train_loss):
        calls["n"] += 1
        if calls["n"] == 3:  # the step-30 checkpoint is written; the epoch-3 evaluation is not
            raise KeyboardInterrupt
        return original(self, train_loss)

    monkeypatch.setattr(Trainer, "_end_epoch", stop_before_the_last_evaluation)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(run=RunDir.create(tmp_path / "run"), checkpoint_every=10).fit()
    monkeypatch.setattr(Trainer, "_end_epoch", original)
    result = make_trainer(run=RunDir(tmp_path / "run"), resume=True, checkpoint_every=10).fit()
    assert len(result.history) == 3 and result.history == reference.history and result.final == reference.final


@pytest.mark.parametrize("damage", ["garbage", "pickle"])
def test_a_changed_rng_pickle_is_refused_before_it_is_loaded(damage, tmp_path):
    import pickle

    make_trainer(run=RunDir.create(tmp_path / "run"), epochs=1).fit()
    state = next((tmp_path / "run/checkpoints").glob("step-*/random_states_0.pkl"))
    # a pickle that would run code when loaded (print, harmless here) or plain damage
    state.write_bytes(pickle.dumps(print) if damage == "pickle" else b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        make_trainer(run=RunDir(tmp_path / "run"), resume=True, epochs=2).fit()


def test_a_checkpoint_half_deleted_while_resaved_is_recovered_from_its_complete_copy(tmp_path):
    import shutil

    make_trainer(run=RunDir.create(tmp_path / "run"), epochs=1).fit()
    final = next((tmp_path / "run/checkpoints").glob("step-*"))
    shutil.copytree(final, final.parent / f".tmp-{final.name}")
    (final / "model.safetensors").unlink()  # the re-save deleted part of the old copy, then died
    result = make_trainer(run=RunDir(tmp_path / "run"), resume=True, epochs=2).fit()
    assert result.steps == 20 and len(result.history) == 2


def test_best_model_is_kept(tmp_path):
    run = RunDir.create(tmp_path / "run")
    result = make_trainer(run=run).fit()
    assert (tmp_path / "run/best/w.pt").exists() and 1 <= result.best_epoch <= 3
    assert result.best["accuracy"] == max(h["accuracy"] for h in result.history)


def test_bf16_mixed_precision_runs_on_cpu():
    assert make_trainer(mixed_precision="bf16", epochs=1).fit().steps == 10


def test_fp16_without_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="fp16"):
        make_trainer(mixed_precision="fp16")


def test_sgd_with_multistep_schedule_learns_and_drops_the_lr_at_each_milestone():
    trainer = make_trainer(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                           milestones=[1, 2], gamma=0.1, warmup_ratio=0.0)
    seen = []
    original = trainer.optimizer.step

    def record_lr(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return original(*args, **kwargs)

    trainer.optimizer.step = record_lr
    result = trainer.fit()
    assert isinstance(trainer.optimizer.optimizer, torch.optim.SGD)
    assert trainer.optimizer.param_groups[0]["momentum"] == 0.9
    assert seen[:10] == pytest.approx([0.1] * 10)          # 10 steps per epoch
    assert seen[10:20] == pytest.approx([0.01] * 10)
    assert seen[20:] == pytest.approx([0.001] * 10)
    assert result.best["accuracy"] > 0.9


def test_sgd_multistep_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    settings = dict(optimizer="sgd", schedule="multistep", milestones=[1.5], checkpoint_every=4)
    reference = make_trainer(run=RunDir.create(tmp_path / "ref"), **settings)
    reference.fit()
    original = Trainer._forward
    calls = {"n": 0}

    def crash_on_call_19(self, batch):
        calls["n"] += 1
        if calls["n"] == 19:  # past the milestone (step 15) and the step-16 checkpoint
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_forward", crash_on_call_19)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(run=RunDir.create(tmp_path / "run"), **settings).fit()
    monkeypatch.setattr(Trainer, "_forward", original)
    resumed = make_trainer(run=RunDir(tmp_path / "run"), resume=True, **settings)
    resumed.fit()
    assert torch.equal(weights(resumed.model), weights(reference.model))


@pytest.mark.parametrize("settings, message", [
    (dict(schedule="multistep"), "needs milestones"),
    (dict(schedule="cosine", milestones=[2]), "only used by schedule 'multistep'"),
    (dict(optimizer="adam"), "optimizer"),
])
def test_inconsistent_optimizer_settings_are_refused(settings, message):
    from shrink.errors import UserError
    from shrink.recipe import build_recipe

    with pytest.raises(UserError, match=message):
        build_recipe({"train": settings})


class RandomTokens(torch.utils.data.Dataset):
    """Sixteen random token sequences with a binary label."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        return {"input_ids": torch.randint(5, 100, (8,), generator=gen), "label": i % 2}


def token_collate(items):
    ids = torch.stack([it["input_ids"] for it in items])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([it["label"] for it in items])}


def recording_step(modes: list):
    def step(model, batch):
        modes.append(model.training)
        return supervised_loss(forward_logits(model, batch), batch["labels"])
    return step


def test_a_bn_cnn_handed_over_in_eval_mode_trains_in_train_mode():
    """Pruning hands its models over in eval mode: the finetune must still update BatchNorm statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)).eval()
    before = model[1].running_mean.clone()
    modes: list[bool] = []
    Trainer(model, Blobs(160, 0), Blobs(64, 1), collate=collate, config=config(epochs=2),
            step=recording_step(modes)).fit()
    assert modes and all(modes)  # every step, including those of the epoch after an evaluation
    assert not torch.equal(model[1].running_mean, before)
    assert int(model[1].num_batches_tracked) == len(modes)


def test_a_hugging_face_model_from_pretrained_trains_with_dropout(tmp_path):
    """``from_pretrained`` returns a model in eval mode; fine-tuning it must run with dropout on."""
    from transformers import BertConfig, BertForSequenceClassification

    small = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=16, num_labels=2)
    BertForSequenceClassification(small).save_pretrained(tmp_path)
    model = BertForSequenceClassification.from_pretrained(tmp_path)
    assert not model.training
    modes: list[bool] = []
    Trainer(model, RandomTokens(), RandomTokens(), collate=token_collate, config=config(epochs=2, batch_size=8),
            step=recording_step(modes)).fit()
    assert len(modes) == 4 and all(modes)


def test_piped_output_gets_one_line_per_epoch_and_no_bar(capsys):
    """In a log file (stderr not a terminal) a bar's carriage returns are noise: one line per epoch instead."""
    make_trainer(epochs=2, progress=True).fit()
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("train epoch")]
    assert [line.split(" (")[0] for line in lines] == ["train epoch 1/2", "train epoch 2/2"]
    assert "train_loss" in lines[0] and "accuracy" in lines[0] and "\r" not in out + err
    make_trainer(epochs=2, progress=True, verbosity="quiet").fit()
    assert "epoch" not in capsys.readouterr().out


def test_a_submodules_lr_scale_trains_it_faster_through_the_schedule_and_keeps_adamws_decay_groups():
    from shrink.optim import make_optimizer, make_scheduler

    student, critic = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), nn.Linear(4, 2)
    critic.lr_scale = 10.0  # as distill sets it on an intermediate term (--inter-lr-scale)
    optimizer = make_optimizer(TrainConfig(weight_decay=0.1), [nn.ModuleDict({"s": student, "c": critic})], lr=1e-4)
    scheduler = make_scheduler(TrainConfig(warmup_ratio=0.0), optimizer, total_steps=10, steps_per_epoch=5)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    group_of = {id(param): group for group in optimizer.param_groups for param in group["params"]}
    student_lr, critic_lr = group_of[id(student[0].weight)]["lr"], group_of[id(critic.weight)]["lr"]
    assert student_lr == pytest.approx(5e-5) and critic_lr == pytest.approx(5e-4)  # half-way down the linear decay
    assert group_of[id(critic.weight)]["weight_decay"] == 0.1 and group_of[id(critic.bias)]["weight_decay"] == 0.0
    assert group_of[id(student[1].weight)]["weight_decay"] == 0.0


def test_epoch_listeners_hear_every_epoch_and_which_is_the_last():
    from shrink.train import epoch_listener

    heard = []
    with epoch_listener(heard.append):
        make_trainer(epochs=2).fit()
    assert [(entry["epoch"], entry["last"]) for entry in heard] == [(1, False), (2, True)]
    assert "accuracy" in heard[0]
