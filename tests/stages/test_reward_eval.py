from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from rlhf_recipes.models import ModelArguments, build_byte_tokenizer, load_model, load_tokenizer
from rlhf_recipes.stages.reward_eval import encode_pair, evaluate_reward_model, format_report

# (chosen score, rejected score) per pair; hand-computed summary below.
SCORES = [(4.0, 1.0), (0.0, 2.0), (1.5, -0.5), (0.5, 0.5)]
ROWS = [{"prompt": f"P{i}:", "chosen": f" c{i}", "rejected": f" r{i}"} for i in range(len(SCORES))]


class FixedScores(torch.nn.Module):
    """A stand-in reward model: each sequence's score is looked up by its decoded text."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.config = SimpleNamespace(pad_token_id=tokenizer.pad_token_id)
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.table = {}
        for row, (chosen, rejected) in zip(ROWS, SCORES):
            self.table[row["prompt"] + row["chosen"]] = chosen
            self.table[row["prompt"] + row["rejected"]] = rejected

    def forward(self, input_ids, attention_mask):
        texts = [
            self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
            for ids, mask in zip(input_ids, attention_mask)
        ]
        return SimpleNamespace(logits=torch.tensor([[self.table[text]] for text in texts]))


@pytest.fixture
def tokenizer():
    return build_byte_tokenizer()


def test_summary_and_records_from_fixed_scores(tokenizer):
    report = evaluate_reward_model(FixedScores(tokenizer), tokenizer, ROWS, batch_size=3)

    assert report["num_pairs"] == 4
    assert report["accuracy"] == 0.5  # a tie is not a win
    assert report["mean_margin"] == pytest.approx((3 - 2 + 2 + 0) / 4)
    assert report["chosen_mean"] == pytest.approx((4 + 0 + 1.5 + 0.5) / 4)
    assert report["rejected_mean"] == pytest.approx((1 + 2 - 0.5 + 0.5) / 4)
    assert report["pairs"][1] == {
        "prompt": "P1:", "chosen": " c1", "chosen_score": 0.0, "rejected": " r1", "rejected_score": 2.0, "margin": -2.0
    }


def test_num_samples_scores_the_first_pairs_that_fit(tokenizer):
    too_long = {"prompt": "P9: a much longer prompt", "chosen": " c", "rejected": " r"}
    rows = Dataset.from_list([too_long, *ROWS])

    report = evaluate_reward_model(FixedScores(tokenizer), tokenizer, rows, num_samples=2, max_length=8)

    assert report["num_pairs"] == 2
    assert report["num_skipped_too_long"] == 1
    assert [pair["prompt"] for pair in report["pairs"]] == ["P0:", "P1:"]
    assert report["accuracy"] == 0.5
    assert report["mean_margin"] == pytest.approx((3 - 2) / 2)


def test_pairs_longer_than_max_length_are_counted_not_scored(tokenizer):
    rows = ROWS[:2] + [{"prompt": "P9: a much longer prompt", "chosen": " c", "rejected": " r"}]
    report = evaluate_reward_model(FixedScores(tokenizer), tokenizer, rows, max_length=8)

    assert report["num_pairs"] == 2
    assert report["num_skipped_too_long"] == 1
    assert "skipped 1 pairs longer than 8 tokens" in format_report(report)
    with pytest.raises(ValueError, match="all 3 pairs exceed max_length=2"):
        evaluate_reward_model(FixedScores(tokenizer), tokenizer, rows, max_length=2)


def test_bad_input_is_named(tokenizer):
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['rejected'\]"):
        evaluate_reward_model(FixedScores(tokenizer), tokenizer, [{"prompt": "P0:", "chosen": " c0"}])
    with pytest.raises(ValueError, match="dataset is empty"):
        evaluate_reward_model(FixedScores(tokenizer), tokenizer, [])
    model = FixedScores(tokenizer)
    model.config.pad_token_id = None
    with pytest.raises(ValueError, match="pad_token_id"):
        evaluate_reward_model(model, tokenizer, ROWS)


def test_report_text_shows_good_and_bad_answers_with_scores(tokenizer):
    text = format_report(evaluate_reward_model(FixedScores(tokenizer), tokenizer, ROWS), max_pairs=1)

    assert "[1] prompt: P0:" in text
    assert "good (chosen)     +4.0000  c0" in text
    assert "bad  (rejected)   +1.0000  r0" in text
    assert "... 3 more pairs" in text
    assert "accuracy (chosen > rejected): 0.5000" in text
    assert "mean margin: +0.7500" in text


def test_scores_are_deterministic_with_dropout_and_training_mode_is_restored():
    args = ModelArguments(model_name_or_path="tiny:opt", model_config_overrides={"dropout": 0.5})
    tokenizer = load_tokenizer(args)
    model = load_model(args, tokenizer, task="seq-cls").train()
    ids = tokenizer("P0: c0", return_tensors="pt")["input_ids"]
    assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout is live in train mode

    first = evaluate_reward_model(model, tokenizer, ROWS)
    second = evaluate_reward_model(model, tokenizer, ROWS, batch_size=1)

    assert model.training
    for key in ("chosen_score", "rejected_score"):
        # equal up to float rounding (batch 8 vs 1); dropout would move scores by ~0.1
        assert [p[key] for p in first["pairs"]] == pytest.approx([p[key] for p in second["pairs"]], abs=1e-5)


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_pairs_are_tokenized_exactly_as_reward_trainer_tokenizes_them(tmp_path, fast, conversational):
    if conversational:
        rows = [
            {
                "prompt": [{"role": "user", "content": f"Question {i}?"}],
                "chosen": [{"role": "assistant", "content": f"Good {i}."}],
                "rejected": [{"role": "assistant", "content": "Bad."}],
            }
            for i in range(3)
        ]
    else:
        rows = ROWS
    args = ModelArguments(model_name_or_path="tiny:opt")
    tokenizer = load_tokenizer(args)
    trainer = RewardTrainer(
        model=load_model(args, tokenizer, task="seq-cls"),
        args=RewardConfig(output_dir=str(tmp_path), **fast),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )

    expected = [(row["chosen_ids"], row["rejected_ids"]) for row in trainer.train_dataset]
    assert [encode_pair(row, tokenizer) for row in rows] == expected
    if conversational:
        assert tokenizer.decode(expected[0][0]).startswith("Human: Question 0?")
