import json
import math
import random
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig

from rlhf_recipes.models import ModelArguments
from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.artifacts.run_dir import RM_EVAL
from rlhf_recipes.stages.reward import check_init_checkpoint, train_reward
from rlhf_recipes.stages.reward_eval import evaluate_reward_model, load_reward_model


def _toy_pairs(count: int, seed: int) -> list[dict]:
    """Trivially separable pairs: the chosen answer says "good", the rejected one "evil" (same length)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        prompt = f"Q: {' '.join(rng.choice('abcdef') for _ in range(3))}? A:"
        rows.append({"prompt": prompt, "chosen": " good", "rejected": " evil"})
    return rows


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory, fast):
    """A reward model trained for 20 steps from the tiny causal-LM base (the 'SFT checkpoint')."""
    output_dir = tmp_path_factory.mktemp("rm")
    config = RewardConfig(
        output_dir=str(output_dir), max_steps=20, per_device_train_batch_size=8, learning_rate=3e-3, **fast
    )
    trainer, report = train_reward(
        ModelArguments(model_name_or_path=tiny_base),
        config,
        Dataset.from_list(_toy_pairs(48, seed=0)),
        Dataset.from_list(_toy_pairs(16, seed=1)),
    )
    return SimpleNamespace(trainer=trainer, report=report, output_dir=output_dir)


def test_reward_model_separates_a_toy_set_and_writes_its_evaluation(trained):
    assert trained.report["num_pairs"] == 16
    assert trained.report["accuracy"] > 0.9
    assert trained.report["mean_margin"] > 0
    written = json.loads((trained.output_dir / RM_EVAL).read_text())
    assert written["accuracy"] == trained.report["accuracy"]
    assert len(written["pairs"]) == 16


def test_saved_reward_model_reloads_with_its_trained_score_head(trained):
    model = AutoModelForSequenceClassification.from_pretrained(trained.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(trained.output_dir)
    rows = _toy_pairs(16, seed=1)

    reloaded = evaluate_reward_model(model, tokenizer, rows)

    assert model.config.num_labels == 1
    assert model.config.pad_token_id == tokenizer.pad_token_id
    for pair, expected in zip(reloaded["pairs"], trained.report["pairs"]):
        assert pair["chosen_score"] == pytest.approx(expected["chosen_score"], abs=1e-5)
        assert pair["rejected_score"] == pytest.approx(expected["rejected_score"], abs=1e-5)


def test_trl_loss_is_the_pairwise_log_sigmoid_of_hand_set_scores(trained):
    # chosen scores 1, 0; rejected 0, 2: loss = (log(1 + e^-1) + log(1 + e^2)) / 2
    fake = SimpleNamespace(logits=torch.tensor([[1.0], [0.0], [0.0], [2.0]]))
    inputs = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3, dtype=torch.long)}

    loss = trained.trainer.compute_loss(lambda **_: fake, inputs)

    assert loss.item() == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(2))) / 2, abs=1e-6)


def test_trl_training_loss_matches_the_evaluator_scores(trained):
    """The evaluator scores the exact sequences the trainer trained on: same tokens, same pad handling."""
    trainer = trained.trainer
    uneven = {"prompt": "Q: longer prompt here? A:", "chosen": " x", "rejected": " a longer one"}  # padding matters
    rows = _toy_pairs(3, seed=2) + [uneven]

    loss = trainer.evaluate(Dataset.from_list(rows))["eval_loss"]
    report = evaluate_reward_model(trainer.model, trainer.processing_class, rows)

    margins = torch.tensor([pair["margin"] for pair in report["pairs"]])
    assert loss == pytest.approx(-torch.nn.functional.logsigmoid(margins).mean().item(), abs=1e-5)


def test_missing_sft_checkpoint_says_to_run_step_1(tmp_path):
    with pytest.raises(ConfigError, match=r"local path .* does not exist\. Run step 1 \(rlhf-recipes sft"):
        check_init_checkpoint(ModelArguments(model_name_or_path=str(tmp_path / "runs" / "tiny" / "sft")))


def test_lora_adapter_as_init_checkpoint_points_to_merged_weights(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "merged").mkdir()
    with pytest.raises(ConfigError, match="merged"):
        check_init_checkpoint(ModelArguments(model_name_or_path=str(tmp_path)))


def test_lora_reward_model_reloads_as_adapter_and_merged_with_the_evaluated_scores(tiny_base, tmp_path, fast):
    model_args = ModelArguments(
        model_name_or_path=tiny_base, use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"], merge_lora=True
    )
    config = RewardConfig(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=3e-3, **fast
    )
    held_out = _toy_pairs(4, seed=1)

    _, report = train_reward(model_args, config, Dataset.from_list(_toy_pairs(16, seed=0)), Dataset.from_list(held_out))

    assert (tmp_path / "adapter_config.json").is_file()
    expected = [pair["chosen_score"] for pair in report["pairs"]]
    for path in (tmp_path, tmp_path / "merged"):
        model, tokenizer = load_reward_model(str(path))
        scores = [pair["chosen_score"] for pair in evaluate_reward_model(model, tokenizer, held_out)["pairs"]]
        assert scores == pytest.approx(expected, abs=1e-5)
