"""distill.augment: augmenters (determinism, pairs, edit limits, TinyBERT's word choice), policies, copies
remade from the originals, the on-disk cache, mixup / CutMix, unlabeled text, and `distill` end to end with
augmentation and with --unlabeled; bad input is one line, exit 2, nothing left behind."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast, MarianConfig, MarianMTModel

from distill.augment import (
    AUGMENTERS,
    AugmentCache,
    AugmentContext,
    AugmentedTrainSet,
    EditLimits,
    build_policy,
    draw_lambda,
    mix_embeddings,
    mix_images,
    ordered_subsets,
    read_unlabeled,
)
from distill.augment.models import AugmentModel, load_translator
from distill.augment.words import STOP_WORDS, split_words
from distill.cli import main
from shrink.data.synthetic import FILLER, NEGATIVE, POSITIVE, SPECIAL_TOKENS, synthetic_tokenizer
from shrink.data.text import TextDataset
from shrink.errors import UserError

EXTRA_WORDS = ("wonder", "##ful", "char", "##ming")  # "wonderful" and "charming" become two pieces


def piece_tokenizer():
    """A WordPiece tokenizer over the synthetic words where two sentiment words are multi-piece."""
    words = sorted({*POSITIVE, *NEGATIVE, *FILLER} - {"wonderful", "charming"})
    vocab = [*SPECIAL_TOKENS, *words, *EXTRA_WORDS]
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, model_max_length=128)


def tiny_mlm(tokenizer=None, seed=0):
    torch.manual_seed(seed)
    tokenizer = tokenizer or piece_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    return BertForMaskedLM(config).eval(), tokenizer


@pytest.fixture(scope="module")
def context():
    model, tokenizer = tiny_mlm()
    mlm = AugmentModel(model, tokenizer, "tiny-mlm")
    return AugmentContext(EditLimits(0.3, 1, 10), 8, {"mlm": lambda: mlm, "embedding": lambda: mlm})


def rngs(count, seed=0):
    return [np.random.default_rng([seed, i]) for i in range(count)]


SENTENCES = ["the film was really wonderful and the acting was great",
             "a dull plot with clumsy dialogue , but charming music",
             "this movie is bad"]


def test_registry_names_and_the_fifteen_ordered_policies():
    assert {"mlm", "embedding", "tinybert", "backtranslate", "swap", "delete"} <= set(AUGMENTERS.names())
    policies = ordered_subsets(["mlm", "backtranslate", "swap"])
    assert len(policies) == 15 and len({tuple(p) for p in policies}) == 15
    with pytest.raises(UserError, match="unknown augmenter 'swop'.*known: backtranslate, delete"):
        build_policy(["swop"], AugmentContext())


@pytest.mark.parametrize("names", [["mlm", "swap"], ["embedding"], ["tinybert"], ["delete"]])
def test_copies_are_deterministic_for_a_seed(names, context):
    policy = build_policy(names, context)
    examples = [(text, None) for text in SENTENCES]
    first = policy.copies(examples, [0, 1, 2], seed=7, round=0, copies=3)
    assert first == policy.copies(examples, [0, 1, 2], seed=7, round=0, copies=3)
    assert first != policy.copies(examples, [0, 1, 2], seed=8, round=0, copies=3)
    # an example's copies do not depend on the batch it is augmented in
    alone = policy.copies(examples[1:2], [1], seed=7, round=0, copies=3)
    assert [copy[1] for copy in first] == [copy[0] for copy in alone]
    assert any(copy[i] != examples[i] for copy in first for i in range(3))


def test_pairs_keep_both_fields_each_augmented_on_its_own(context):
    policy = build_policy(["delete", "swap"], context)
    premise, hypothesis = "the plot was dull and the acting was weak", "a great movie with fresh music"
    for copy in policy.copies([(premise, hypothesis)], [0], seed=1, round=0, copies=4):
        text, pair = copy[0]
        assert text and pair
        assert set(text.split()) <= set(premise.split()) and set(pair.split()) <= set(hypothesis.split())


@pytest.mark.parametrize("name", ["mlm", "embedding", "delete", "swap"])
def test_at_most_aug_max_words_change(name, context):
    words = [FILLER[i % len(FILLER)] for i in range(80)]
    limited = AugmentContext(EditLimits(aug_p=1.0, aug_min=1, aug_max=10), 8, context.loaders, context.loaded)
    augmenter = AUGMENTERS.get(name)(limited)
    for out in augmenter([" ".join(words)] * 4, rngs(4)):
        new = out.split()
        changed = len(words) - len(new) if name == "delete" else sum(a != b for a, b in zip(words, new))
        assert 1 <= changed <= 10, (name, changed)


def test_tinybert_replaces_only_non_stop_word_alphabetic_words(context):
    augmenter = AUGMENTERS.get("tinybert")(context)
    text = "the acting , in 1999 , was wonderful and charming but it was not great !"
    words = split_words(text)
    changed = set()
    for out in augmenter([text] * 40, rngs(40)):
        new = split_words(out)
        assert len(new) == len(words)
        changed |= {i for i, (a, b) in enumerate(zip(words, new)) if a != b}
    allowed = {i for i, w in enumerate(words) if w.core.isalpha() and w.core.lower() not in STOP_WORDS}
    assert changed and changed <= allowed
    assert {words[i].core for i in changed} >= {"wonderful", "charming"}  # multi-piece words: embedding neighbours
    assert "but" in STOP_WORDS and "1999" in text


def marian_dir(folder: Path, seed: int) -> str:
    """A tiny random Marian model with the synthetic word-level tokenizer, saved like a real one."""
    torch.manual_seed(seed)
    tokenizer = synthetic_tokenizer()
    config = MarianConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.sep_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    MarianMTModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_back_translation_runs_both_models_on_each_field(tmp_path):
    forward, backward = (load_translator(marian_dir(tmp_path / name, seed)) for name, seed in (("to", 0), ("back", 1)))
    policy = build_policy(["backtranslate"], AugmentContext(loaders={"translation": lambda: (forward, backward, None)}))
    examples = [("the film was good", "a dull plot"), ("great acting", None)]
    copies = policy.copies(examples, [0, 1], seed=0, round=0, copies=1)
    assert copies == policy.copies(examples, [0, 1], seed=5, round=0, copies=1)  # default generation: deterministic
    (text, pair), (single, none) = copies[0]
    assert text and pair and single and none is None and text != examples[0][0]
    vocabulary = set(synthetic_tokenizer().get_vocab())
    assert set(text.split()) <= vocabulary  # words the backward model's tokenizer decodes to
    identity = policy.identity()[0]
    assert identity["forward"] != identity["backward"]  # the cache key tells the two models apart


def labelled(texts):
    return TextDataset(texts, None, list(range(len(texts))))


def test_copies_are_remade_from_the_originals_and_never_compound(tmp_path, context):
    texts = [" ".join(FILLER[i:i + 12]) for i in range(6)]
    originals = labelled(texts)
    policy = build_policy(["delete"], AugmentContext(EditLimits(0.5, 1, 2)))
    train = AugmentedTrainSet(originals, len(originals), policy, copies=2, seed=3, cache=AugmentCache(tmp_path),
                              refresh_every=1, progress=False)
    assert len(train) == 6 * 3
    rounds = [[train.example_at(epoch, i)["text"] for i in range(6, 18)] for epoch in range(4)]
    assert [originals[i]["text"] for i in range(6)] == texts  # the originals are untouched
    assert all(len(text.split()) == 10 for copies in rounds for text in copies)  # 2 deleted per round, not 2 per epoch
    assert rounds[0] != rounds[1] != rounds[2]
    example = train.example_at(5, 7)
    assert example["index"] == 7 and example["label"] == -100  # copies are labelled by the teacher (KD)
    gold = AugmentedTrainSet(originals, 6, policy, 2, 3, AugmentCache(tmp_path), gold_copies=True, progress=False)
    assert gold[7]["label"] == 1 and gold[2] == {**originals[2], "index": 2}


def test_cache_hits_on_the_second_run_and_misses_after_a_policy_change(tmp_path, context):
    originals = labelled(SENTENCES)

    def train_set(names):
        return AugmentedTrainSet(originals, 3, build_policy(names, context), 2, seed=1, cache=AugmentCache(tmp_path),
                                 progress=False)

    first, second, other = train_set(["mlm", "swap"]), train_set(["mlm", "swap"]), train_set(["swap", "mlm"])
    assert first.copies_of(0) == second.copies_of(0)
    assert [c["cached"] for c in first.costs + second.costs] == [False, True]
    other.copies_of(0)
    assert other.costs[0]["cached"] is False and len(list(tmp_path.glob("*.json"))) == 2
    assert first.costs[0]["sentences"] == 6 and first.costs[0]["seconds_per_1000_sentences"] > 0


def test_a_failed_augmentation_leaves_no_cache_file(tmp_path):
    class Broken:
        name = "broken"

        def __call__(self, texts, rngs):
            raise RuntimeError("model crashed")

        def identity(self):
            return {"name": self.name}

    from distill.augment import Policy

    train = AugmentedTrainSet(labelled(SENTENCES), 3, Policy([Broken()]), 1, 0, AugmentCache(tmp_path / "c"),
                              progress=False)
    with pytest.raises(RuntimeError):
        train.copies_of(0)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_mixup_lambda_one_reproduces_the_batch_and_lambda_averages_one_half():
    torch.manual_seed(0)
    model, _ = tiny_mlm()
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 13, 14, 3]])
    mask = (ids != 0).long()
    perm = torch.tensor([1, 0])
    same = mix_embeddings(model, {"input_ids": ids, "attention_mask": mask}, 1.0, perm)
    assert same["inputs_embeds"].shape[0] == 4
    assert torch.equal(same["inputs_embeds"][2:], same["inputs_embeds"][:2])
    assert torch.equal(same["attention_mask"][2:], mask)
    half = mix_embeddings(model, {"input_ids": ids, "attention_mask": mask}, 0.5, perm)
    assert half["attention_mask"][2].tolist() == [1, 1, 1, 1, 1]  # the union of both masks
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        mixed = model(**same).logits
    assert torch.allclose(mixed[2:], plain, atol=1e-5) and torch.allclose(mixed[:2], plain, atol=1e-5)
    pixels = torch.rand(4, 3, 8, 8)
    for cutmix in (False, True):
        assert torch.equal(mix_images(pixels, 1.0, torch.tensor([3, 2, 1, 0]), cutmix)[4:], pixels)
    cut = mix_images(pixels, 0.75, torch.tensor([1, 0, 3, 2]), cutmix=True)[4:]
    assert (cut != pixels).any(dim=1).float().mean().item() == pytest.approx(0.25, abs=0.05)
    draws = draw_lambda(0.4, (100_000,))
    assert abs(draws.mean().item() - 0.5) < 0.01 and 0 <= draws.min() and draws.max() <= 1


def test_unlabeled_file_reading(tmp_path):
    single = tmp_path / "raw.txt"
    single.write_text("a good film\n\nboring plot\n", encoding="utf-8")
    data = read_unlabeled(str(single), pairs=False, regression=False)
    assert len(data) == 2 and data[1] == {"text": "boring plot", "text_pair": None, "label": -100}
    paired = tmp_path / "pairs.tsv"
    paired.write_text("a man sleeps\ta person rests\n", encoding="utf-8")
    assert read_unlabeled(str(paired), pairs=True, regression=True)[0]["text_pair"] == "a person rests"
    with pytest.raises(UserError, match="line 1: this task takes sentence pairs"):
        read_unlabeled(str(single), pairs=True, regression=False)


# ------------------------------------------------------------------------------------------- end to end
TINY = ["--dataset", "synthetic-text", "--max-train-samples", "16", "--max-eval-samples", "8", "--teacher",
        "bert-tiny", "--student", "bert-tiny", "--epochs", "1", "--batch-size", "8", "--max-length", "16",
        "--intermediate", "none", "--no-progress"]


def mlm_dir(folder: Path, tokenizer=None) -> str:
    model, tokenizer = tiny_mlm(tokenizer or synthetic_tokenizer())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_an_augmented_distill_run_end_to_end_and_its_cache_on_rerun(tmp_path, capsys):
    args = [*TINY, "--augment", "mlm,swap", "--aug-p", "0.3", "--aug-copies", "2", "--mixup", "--hard-weight", "0.5",
            "--epochs", "2", "--set", "distill.augment.refresh_every=1",
            "--set", f"distill.augment.mlm_model={mlm_dir(tmp_path / 'mlm')}", "--out", str(tmp_path / "run")]
    main(args)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    augmentation = metrics["augmentation"]
    assert augmentation["policy"] == ["mlm", "swap"] and augmentation["copies"] == 2 and augmentation["mixup"]
    assert [r["round"] for r in augmentation["rounds"]] == [0, 1]  # new copies for the second epoch
    assert augmentation["rounds"][0]["sentences"] == 32 and augmentation["seconds_per_1000_sentences"] > 0
    stage = metrics["stages"][0]
    assert stage["teacher_outputs"] == "live" and stage["steps"] == 12  # (16 originals + 32 copies) / 8, 2 epochs
    assert len(list((tmp_path / "run" / "augmented").glob("*.json"))) == 2
    assert "s per 1,000 sentences" in capsys.readouterr().out
    main([*args, "--overwrite"])
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["cached"] for r in again["augmentation"]["rounds"]] == [True, True]
    assert again["augmentation"]["seconds_per_1000_sentences"] is None
    assert again["stages"][0]["history"] == stage["history"]  # the cached copies train the same student


def test_an_unlabeled_distill_run_distils_on_teacher_labelled_text(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(["a good film", "dull and boring plot", "great acting and fresh music"] * 4) + "\n")
    main([*TINY, "--kd-loss", "kl", "--unlabeled", str(raw), "--out", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["augmentation"]["unlabeled_examples"] == 12 and metrics["augmentation"]["policy"] == []
    stage = metrics["stages"][0]
    assert stage["teacher_outputs"] == "cached" and stage["steps"] == 4  # 16 labelled + 12 unlabeled
    from safetensors.torch import load_file
    assert load_file(tmp_path / "run" / "teacher_logits.safetensors")["logits"].shape == (28, 2)


def test_a_training_holdout_is_taken_before_augmentation_and_unlabeled_text_join(tmp_path):
    from distill.cli import build_parser, recipe_from_args
    from distill.run import plan_distillation

    raw = tmp_path / "raw.txt"
    raw.write_text("a good film\ndull and boring plot\n")
    args = [*TINY, "--augment", "swap", "--aug-copies", "1", "--unlabeled", str(raw), "--select-on", "train-holdout",
            "--out", str(tmp_path / "run")]
    plan = plan_distillation(recipe_from_args(build_parser().parse_args(args)))
    kept, held = plan.task.train.indices, plan.task.selection.indices
    assert len(held) == 2 and sorted(kept + held) == list(range(16))  # a seeded 10% of the 16 labelled examples
    main(args)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["augmentation"]["unlabeled_examples"] == 2
    assert metrics["stages"][0]["steps"] == 4  # (14 kept + 2 unlabeled) and a copy of each, batches of 8


def test_cutmix_doubles_image_batches_in_a_two_stage_vision_run(tmp_path):
    from tests.test_distill_cli import VISION

    (tmp_path / "vision.yaml").write_text(VISION)
    main(["--recipe", str(tmp_path / "vision.yaml"), "--set", "distill.augment.cutmix=true",
          "--max-train-samples", "32", "--out", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["augmentation"]["mixup"] and metrics["augmentation"]["cutmix"]
    features, logits = metrics["stages"]
    assert set(features["loss_terms"]) == {"0:hidden_mse"} and set(logits["loss_terms"]) == {"kd", "hard"}
    assert logits["teacher_outputs"] == "live"  # mixed batches: never the cached logits


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, needle", [
    (["--augment", "mlm,swop"], "unknown augmenter 'swop'; did you mean 'swap'? known: backtranslate, delete"),
    (["--augment", "swap", "--aug-p", "0"], "aug_p"),
    (["--augment", "swap", "--aug-p", "1.5"], "aug_p"),
    (["--augment", "backtranslate"], "back-translation needs two translation models"),
    (["--augment", "mlm", "--set", "distill.augment.mlm_model={foreign_mlm}"], "cannot tokenize the data"),
    (["--augment", "mlm", "--set", "distill.augment.mlm_model={classifier}"], "has no masked-LM head"),
    (["--unlabeled", "{empty}"], "has no text"),
    (["--unlabeled", "{latin1}"], "is not UTF-8"),
    (["--mixup", "--teacher", "{other_vocab}", "--student", "{student}"], "tokenize differently"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(args, needle, tmp_path, capsys):
    from tests.test_distill_cli import other_tokenizer, tiny_bert_dir

    foreign = BertTokenizerFast(vocab={w: i for i, w in enumerate([*SPECIAL_TOKENS, "chat", "chien", "maison"])})
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "latin1.txt").write_bytes("un film très réussi\n".encode("latin-1"))
    values = {"foreign_mlm": mlm_dir(tmp_path / "foreign", foreign), "classifier": tiny_bert_dir(tmp_path / "cls"),
              "empty": str(tmp_path / "empty.txt"), "latin1": str(tmp_path / "latin1.txt"),
              "other_vocab": tiny_bert_dir(tmp_path / "other", tokenizer=other_tokenizer()),
              "student": tiny_bert_dir(tmp_path / "student")}
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, *(a.format(**values) for a in args), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_masked_lm_scores_only_the_masks_and_matches_the_full_forward():
    from distill.augment.mlm import MaskedWords

    model, tokenizer = tiny_mlm()
    words = MaskedWords(AugmentModel(model, tokenizer, "tiny"), batch_size=2)
    texts = ["the [MASK] was [MASK] good", "a [MASK] film", "no masks here"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        full = model(**batch).logits
    masked = batch["input_ids"] == tokenizer.mask_token_id
    ids, _ = words.vocabulary
    for row, scores in enumerate(words.predict(texts)):
        assert torch.allclose(scores, full[row][masked[row]][:, ids], atol=1e-5)
