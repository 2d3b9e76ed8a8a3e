"""PPOTrainer behaviour on tiny models: learning, ptx, LoRA reference, EMA, non-finite handling,
reward-model scoring, saving and hub upload."""

import copy
import json

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, OPTForCausalLM
from transformers import OPTForSequenceClassification

from rlhf_recipes.models import build_byte_tokenizer
from rlhf_recipes.ppo import NonFiniteError, PPOTrainer, PtxCallback
from rlhf_recipes.artifacts import hub
from rlhf_recipes.artifacts.checkpointing import MARKER, latest_checkpoint
from rlhf_recipes.ppo.scoring import RewardScorer


def read_log(output_dir, name="ppo_log.jsonl"):
    with open(output_dir / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_reward_rises_and_the_run_saves_logs_samples_and_loadable_models(tiny, tmp_path):
    args = tiny.args(tmp_path, max_steps=14, sample_every=7, eval_strategy="steps", eval_steps=14,
                     report_to="tensorboard")
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                         reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset(), eval_dataset=tiny.dataset(8))
    trainer.train()
    log = read_log(tmp_path)
    scores = [row["objective/scores"] for row in log]
    # a random policy says 'yes' ~1/12 of the time; PPO must make it clearly more frequent
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.3, scores
    expected = {"objective/kl", "objective/entropy", "objective/scores", "objective/rlhf_reward", "policy/approxkl",
                "policy/clipfrac", "loss/policy", "loss/value", "val/clipfrac", "kl_coef", "lr/actor", "lr/critic",
                "episode", "nonfinite_skipped", "prompt_indices"}
    assert expected <= set(log[0]) and [row["step"] for row in log] == list(range(1, 15))
    assert log[-1]["episode"] == 14 * 16 and log[-1]["nonfinite_skipped"] == 0
    assert any("eval/scores" in row for row in trainer.state.log_history)
    samples = read_log(tmp_path, "samples.jsonl")
    assert [s["step"] for s in samples] == [7] * 4 + [14] * 4 and {"prompt", "completion", "score"} <= set(samples[0])
    events = b"".join(path.read_bytes() for path in (tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert b"objective/scores" in events and b"samples" in events  # scalars and the sample table reach TensorBoard

    trainer.save_model()
    policy = AutoModelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(policy.state_dict(), trainer.unwrapped_actor.state_dict())
    critic = AutoModelForSequenceClassification.from_pretrained(tmp_path / "critic")
    torch.testing.assert_close(critic.score.weight, trainer.unwrapped_critic.model.score.weight)
    assert not (tmp_path / "README.md").exists()  # one card per stage: the PPO stage's (hub.finish_and_push)


def test_ptx_coef_zero_gives_the_same_update_as_no_ptx_and_a_positive_coef_changes_it(tiny, tmp_path):
    ptx = Dataset.from_list([{"text": "yes no yes no x y"}, {"text": "a b c d"}, {"text": "x x y"}])

    def one_update(name, callbacks):
        args = tiny.args(tmp_path / name, max_steps=1)
        trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                             reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset(), callbacks=callbacks)
        trainer.train()
        return trainer.unwrapped_actor.state_dict(), read_log(tmp_path / name)[0]

    plain, _ = one_update("plain", [])
    zero, zero_log = one_update("zero", [PtxCallback(ptx, 0.0)])
    mixed, mixed_log = one_update("mixed", [PtxCallback(ptx, 1.0)])
    for key in plain:
        assert torch.equal(plain[key], zero[key]), key
    assert any(not torch.equal(plain[key], mixed[key]) for key in plain)
    assert zero_log["loss/ptx"] > 0 and mixed_log["loss/ptx"] > 0  # the LM loss is monitored either way


def test_lora_reference_is_the_base_model_with_the_adapter_disabled(tiny, tmp_path):
    base = tiny.policy()
    original = copy.deepcopy(base).eval()
    args = tiny.args(tmp_path, max_steps=2, learning_rate=3e-2)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = PPOTrainer(args, tiny.tokenizer, base, value_model=tiny.value(), reward_funcs=[tiny.reward_yes],
                         train_dataset=tiny.dataset(), peft_config=lora)
    assert trainer.ref_model is None  # no second copy of the policy
    trainer.train()
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    actor = trainer.unwrapped_actor.eval()
    with torch.no_grad():
        trained = actor(input_ids=ids).logits
        with actor.disable_adapter():
            disabled = actor(input_ids=ids).logits
        reference = original(input_ids=ids).logits
    assert not torch.allclose(trained, reference, atol=1e-4)  # the adapter did learn something
    torch.testing.assert_close(disabled, reference)
    with pytest.raises(ValueError, match="ref_model"):
        PPOTrainer(args, tiny.tokenizer, tiny.policy(), ref_model=tiny.policy(), value_model=tiny.value(),
                   reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset(), peft_config=lora)


def test_ema_is_the_decayed_average_of_the_actor(tiny, tmp_path):
    args = tiny.args(tmp_path, max_steps=1, num_ppo_epochs=1, num_mini_batches=1, ema=True, ema_decay=0.9)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                         reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset())
    before = copy.deepcopy(trainer.unwrapped_actor.state_dict())
    trainer.train()  # exactly one optimizer step
    after = trainer.unwrapped_actor.state_dict()
    ema = trainer.ema.state_dict()
    key = "model.decoder.layers.0.fc1.weight"
    assert not torch.equal(before[key], after[key])
    torch.testing.assert_close(ema[key], 0.9 * before[key] + 0.1 * after[key])
    trainer.save_model()
    assert (tmp_path / "ema" / "model.safetensors").is_file()


def test_ema_of_a_bf16_actor_is_kept_in_fp32_so_small_updates_are_not_rounded_away(tiny, tmp_path):
    args = tiny.args(tmp_path, max_steps=1, ema=True, ema_decay=0.992)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy().to(torch.bfloat16), value_model=tiny.value(),
                         reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset())
    key = "model.decoder.layers.0.fc1.weight"
    live, ema = trainer.unwrapped_actor.state_dict()[key], trainer.ema.state_dict()[key]
    assert ema.dtype == torch.float32
    start = ema.clone()
    with torch.no_grad():
        live.add_(live.abs().clamp_min(1e-2) * 2.0**-6)  # a few bf16 ulps: 0.008 x that is far below one ulp
    trainer._update_ema()
    torch.testing.assert_close(trainer.ema.state_dict()[key], 0.992 * start + 0.008 * live.float())
    assert not torch.equal(trainer.ema.state_dict()[key], start)


def test_non_finite_rewards_skip_updates_then_stop_with_the_last_checkpoint_intact(tiny, tmp_path):
    calls = {"n": 0}

    def sometimes_nan(prompts, completions, **kwargs):
        calls["n"] += 1
        bad = calls["n"] in (2, 4, 5, 6)
        return [float("nan") if bad else 1.0] * len(prompts)

    args = tiny.args(tmp_path, max_steps=10, max_nonfinite_steps=3, save_strategy="steps", save_steps=3)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                         reward_funcs=[sometimes_nan], train_dataset=tiny.dataset())
    with pytest.raises(NonFiniteError, match="3 updates in a row"):
        trainer.train()
    log = read_log(tmp_path)
    assert [row["skipped"] for row in log] == [False, True, False, True, True, True]
    assert [row["nonfinite_skipped"] for row in log] == [0, 1, 1, 2, 3, 4]
    assert "loss/policy" not in log[1] and "loss/policy" in log[2]  # no update stats for a skipped step
    assert latest_checkpoint(str(tmp_path)).endswith("checkpoint-3")
    assert not (tmp_path / "checkpoint-6").exists()
    assert (tmp_path / "checkpoint-3" / MARKER).is_file()


def test_reward_model_with_its_own_tokenizer_scores_retokenised_text(tiny, tmp_path, monkeypatch):
    rm_tokenizer = build_byte_tokenizer()  # pad <pad> != eos </s>, so HF's own pooling finds the last token
    torch.manual_seed(3)
    reward_model = OPTForSequenceClassification(
        tiny.config(vocab_size=len(rm_tokenizer), pad_token_id=0, max_position_embeddings=128)
    )
    args = tiny.args(tmp_path, max_steps=1)
    with pytest.raises(ValueError, match="pass value_model"):
        PPOTrainer(args, tiny.tokenizer, tiny.policy(), reward_model=reward_model, train_dataset=tiny.dataset(),
                   reward_processing_class=rm_tokenizer)
    seen = []
    real_call = RewardScorer.__call__

    def spy(self, rollout, prompts, columns=None):
        scores = real_call(self, rollout, prompts, columns)
        seen.append((prompts, self.decode(rollout), rollout.has_stop.tolist(), scores))
        return scores

    monkeypatch.setattr(RewardScorer, "__call__", spy)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(), reward_model=reward_model,
                         train_dataset=tiny.dataset(), reward_processing_class=rm_tokenizer)
    trainer.train()
    prompts, answers, stopped, scores = seen[0]
    # word-level text: prompt and answer joined by a space; the RM's own EOS after a stopped answer
    texts = [" ".join(x for x in (p, a) if x) + ("</s>" if s else "") for p, a, s in zip(prompts, answers, stopped)]
    with torch.no_grad():  # HF's own forward pools at the last non-pad token: an independent reading
        expected = reward_model(**rm_tokenizer(texts, padding=True, return_tensors="pt")).logits.squeeze(-1)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_critic_starts_as_a_trainable_copy_of_the_reward_model(tiny, tmp_path):
    reward_model = tiny.value(seed=5)
    frozen = copy.deepcopy(reward_model.state_dict())
    trainer = PPOTrainer(tiny.args(tmp_path, max_steps=1), tiny.tokenizer, tiny.policy(), reward_model=reward_model,
                         train_dataset=tiny.dataset())
    critic = trainer.unwrapped_critic.model
    assert critic is not reward_model
    torch.testing.assert_close(critic.state_dict(), frozen)
    trainer.train()
    assert not torch.equal(critic.score.weight, frozen["score.weight"])  # the critic learns
    for key, value in reward_model.state_dict().items():
        assert torch.equal(value, frozen[key]), key  # the reward model does not


def test_push_to_hub_uploads_the_output_dir_without_checkpoints(tiny, tmp_path, monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kwargs):
            calls["create"] = repo_id
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, **kwargs):
            calls["upload"] = kwargs
            return "commit"

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    args = tiny.args(tmp_path / "run", hub_model_id="me/tiny-ppo", hub_token="secret")
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                         reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset())
    assert trainer.push_to_hub(commit_message="done") == "commit"
    upload = calls["upload"]
    assert calls["create"] == "me/tiny-ppo" and calls["token"] == "secret"
    assert upload["repo_id"] == "me/tiny-ppo" and upload["folder_path"] == str(tmp_path / "run")
    assert upload["commit_message"] == "done" and "checkpoint-*" in upload["ignore_patterns"]


def test_each_minibatch_is_one_clipped_optimizer_step_over_its_accumulated_microbatches(tiny, tmp_path):
    def one_update(name, **overrides):
        args = tiny.args(tmp_path / name, max_steps=1, per_device_train_batch_size=16, num_mini_batches=2,
                         gradient_accumulation_steps=2, num_ppo_epochs=3, **overrides)
        trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                             reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset())
        before = copy.deepcopy(trainer.unwrapped_actor.state_dict())
        trainer.train()
        moved = max((trainer.unwrapped_actor.state_dict()[k] - w).abs().max().item() for k, w in before.items())
        steps = {int(s["step"]) for s in trainer.actor_optimizer.state_dict()["state"].values()}
        return moved, steps

    moved, steps = one_update("free", max_grad_norm=1e9)
    assert steps == {6}  # 3 epochs x 2 minibatches; 4 microbatches of 4 rows each accumulate into 2 steps
    assert moved > 1e-3  # Adam moves weights by ~lr = 3e-3 per step
    # gradients clipped to norm 1e-12 sit far below Adam's eps (1e-8): the update all but vanishes
    clipped, _ = one_update("clipped", max_grad_norm=1e-12)
    assert clipped < 1e-5


def test_reward_normalisation_uses_running_statistics_of_all_scores(tiny, tmp_path):
    def length(prompts, completions, completion_ids, **kwargs):
        return [float(len(ids)) for ids in completion_ids]

    args = tiny.args(tmp_path, max_steps=1, normalize_reward=True)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(), reward_funcs=[length],
                         train_dataset=tiny.dataset())
    trainer.train()
    row = read_log(tmp_path)[0]
    # after one rollout the running statistics are that batch's own: normalised scores have mean 0
    assert row["objective/raw_scores"] >= 1.0 and abs(row["objective/scores"]) < 1e-5
    moments = trainer.shaper.moments
    assert moments.count == 16 and moments.mean == pytest.approx(row["objective/raw_scores"])


def test_the_first_ratio_of_an_update_is_one_with_temperature_and_top_k(tiny, tmp_path):
    # one epoch, one minibatch: the only ratio is computed before any optimizer step, from the
    # logprobs kept by the sampling loop (unfiltered softmax of logits / temperature)
    args = tiny.args(tmp_path, max_steps=1, num_ppo_epochs=1, num_mini_batches=1, temperature=0.7, top_k=3)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                         reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset())
    trainer.train()
    row = read_log(tmp_path)[0]
    assert abs(row["val/ratio"] - 1.0) < 1e-5 and row["policy/approxkl"] < 1e-10 and row["policy/clipfrac"] == 0.0


def test_disable_dropout_also_zeroes_functional_dropout_rates(tiny, tmp_path):
    torch.manual_seed(0)
    policy = OPTForCausalLM(tiny.config(dropout=0.5, attention_dropout=0.5, layerdrop=0.5))
    trainer = PPOTrainer(tiny.args(tmp_path), tiny.tokenizer, policy, value_model=tiny.value(),
                         reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset())
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    actor = trainer.unwrapped_actor.train()
    with torch.no_grad():
        training = [actor(input_ids=ids).logits for _ in range(2)]
        evaluation = actor.eval()(input_ids=ids).logits
    torch.testing.assert_close(training[0], evaluation)
    torch.testing.assert_close(training[1], evaluation)


def test_an_optimizer_step_clips_each_model_to_max_grad_norm_only_when_above_it(tiny, tmp_path):
    # plain SGD with lr 1: each step moves the weights by exactly minus the (clipped) gradient
    args = tiny.args(tmp_path, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=1.0)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                         reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset())
    models = {"actor": trainer.unwrapped_actor, "critic": trainer.unwrapped_critic}
    before = {name: [p.detach().clone() for p in model.parameters()] for name, model in models.items()}
    for p in models["actor"].parameters():
        p.grad = torch.full_like(p, 0.5)  # norm far above 1: scaled down to 1
    for p in models["critic"].parameters():
        p.grad = torch.full_like(p, 1e-4)  # norm below 1: left as is
    assert trainer._optimizer_step()
    moved = {name: torch.cat([(old - p.detach()).flatten() for old, p in zip(before[name], model.parameters())])
             for name, model in models.items()}
    assert abs(moved["actor"].norm().item() - 1.0) < 1e-4
    torch.testing.assert_close(moved["critic"], torch.full_like(moved["critic"], 1e-4))
    assert all(p.grad is None for model in models.values() for p in model.parameters())


def test_without_a_stop_token_responses_run_to_full_length_even_past_the_models_eos(tiny, tmp_path):
    # stop_token=None: EOS is an ordinary token, although the model's generation config names it as
    # eos_token_id (transformers' generate would stop there and pad)
    policy = tiny.policy()
    with torch.no_grad():  # every final hidden state points at EOS's (tied) embedding: EOS logit 3, others ~0
        eos = policy.get_input_embeddings().weight[tiny.tokenizer.eos_token_id]
        policy.model.decoder.final_layer_norm.weight.zero_()
        policy.model.decoder.final_layer_norm.bias.copy_(eos / eos.norm() ** 2 * 3)
    seen = []

    def record(prompts, completions, completion_ids, **kwargs):
        seen.extend(completion_ids)
        return [0.0] * len(prompts)

    args = tiny.args(tmp_path, max_steps=1, stop_token=None)
    PPOTrainer(args, tiny.tokenizer, policy, value_model=tiny.value(), reward_funcs=[record],
               train_dataset=tiny.dataset()).train()
    assert all(len(ids) == args.response_length for ids in seen)
    assert sum(ids.count(tiny.tokenizer.eos_token_id) for ids in seen) > len(seen)  # EOS is sampled, often
    assert not any(tiny.tokenizer.pad_token_id in ids for ids in seen)  # and nothing is cut or padded after it
