"""The PPO recipe: configuration errors before any model loads, and a tiny end-to-end run."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_recipes.data import DataArguments
from rlhf_recipes.models import ModelArguments, build_tiny_model, load_tokenizer
from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.ppo import PPOConfig
from rlhf_recipes.ppo import run as run_module


def ppo_config(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path / "ppo"), use_cpu=True, report_to="none", disable_tqdm=True,
                sft_model_path="tiny:opt", reward_model_path="tiny:opt", max_prompt_length=64, response_length=8)
    return PPOConfig(**dict(base, **overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(per_device_train_batch_size=6, num_mini_batches=4), "divisible by num_mini_batches"),
        (dict(per_device_train_batch_size=8, num_mini_batches=2, gradient_accumulation_steps=3), "accumulation_steps"),
        (dict(kl_estimator="k2"), "kl_estimator"),
        (dict(stop_token="eos", stop_token_id=5), "not both"),
        (dict(missing_eos_penalty=-1.0), "missing_eos_penalty"),
    ],
)
def test_invalid_settings_are_rejected_by_the_config(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        ppo_config(tmp_path, **overrides)


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if a model or the data is loaded."""

    def forbidden(*args, **kwargs):
        raise AssertionError("loaded before the configuration error was raised")

    monkeypatch.setattr(run_module, "load_model", forbidden)
    monkeypatch.setattr(run_module, "load_stage_dataset", forbidden)


def test_response_beyond_the_model_positions_fails_before_loading(tmp_path, no_loading):
    model_args = ModelArguments(model_config_overrides={"max_position_embeddings": 64})
    args = ppo_config(tmp_path, max_prompt_length=60, response_length=8)
    with pytest.raises(ConfigError, match=r"exceeds the model's 64 positions"):
        run_module.run_ppo(model_args, DataArguments(), args)


def test_separate_reference_with_lora_fails_before_loading(tmp_path, no_loading):
    args = ppo_config(tmp_path, ref_model_path="tiny:opt")
    with pytest.raises(ConfigError, match="ref_model_path is set together with use_peft"):
        run_module.run_ppo(ModelArguments(use_peft=True), DataArguments(), args)


def test_unwritable_output_dir_fails_before_loading(tmp_path, no_loading):
    (tmp_path / "a-file").write_text("not a directory")
    args = ppo_config(tmp_path, output_dir=str(tmp_path / "a-file" / "ppo"))
    with pytest.raises(ConfigError, match="is not writable"):
        run_module.run_ppo(ModelArguments(), DataArguments(), args)


def test_merge_lora_without_lora_fails_before_loading(tmp_path, no_loading):
    with pytest.raises(ConfigError, match="merge_lora: true needs LoRA"):
        run_module.run_ppo(ModelArguments(merge_lora=True), DataArguments(), ppo_config(tmp_path))


@pytest.mark.parametrize(("use_peft", "fails"), [(False, True), (True, False)])
def test_checkpoints_that_cannot_fit_on_disk_fail_before_loading(tmp_path, monkeypatch, use_peft, fails):
    """Full fine-tuning keeps actor and critic weights plus optimizer states per checkpoint; a LoRA
    actor and critic only their adapters."""
    import shutil

    from rlhf_recipes.config import preflight

    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1024))
    loaded = []
    monkeypatch.setattr(run_module, "load_stage_dataset", lambda *a, **k: loaded.append(a) or 1 / 0)
    args = ppo_config(tmp_path, save_strategy="steps", save_steps=1, max_steps=2, critic_use_peft=use_peft)
    if fails:
        with pytest.raises(ConfigError, match=r"free but this run needs .*actor: .*critic: "):
            run_module.run_ppo(ModelArguments(use_peft=use_peft), DataArguments(), args)
        assert not loaded
    else:
        with pytest.raises(ZeroDivisionError):  # got past the preflight to the data
            run_module.run_ppo(ModelArguments(use_peft=use_peft), DataArguments(), args)


@pytest.mark.parametrize(("ptx_data_split", "expected"), [(None, "2,4,4"), ("1,0,0", "1,0,0")])
def test_ptx_texts_use_their_own_data_split_when_given(tmp_path, monkeypatch, ptx_data_split, expected):
    calls = []

    class Stop(Exception):
        pass

    def record(data_args, stage):
        calls.append((data_args.dataset_name, data_args.data_split, stage))
        if len(calls) == 2:
            raise Stop

    monkeypatch.setattr(run_module, "load_stage_dataset", record)
    script = run_module.PPOScriptArguments(ptx_dataset_name="corpus.jsonl", ptx_data_split=ptx_data_split)
    with pytest.raises(Stop):
        run_module.run_ppo(ModelArguments(), DataArguments(dataset_name="prompts.jsonl", data_split="2,4,4"),
                           ppo_config(tmp_path), script)
    assert calls == [("prompts.jsonl", "2,4,4", "ppo"), ("corpus.jsonl", expected, "sft")]


def test_lora_critic_without_lora_settings_fails_before_loading(tmp_path, no_loading):
    with pytest.raises(ConfigError, match="critic_use_peft .* set use_peft: true"):
        run_module.run_ppo(ModelArguments(), DataArguments(), ppo_config(tmp_path, critic_use_peft=True))


@pytest.mark.parametrize("critic_use_peft", [True, False])
def test_a_lora_critic_loads_the_reward_model_with_the_policys_quantization(tmp_path, monkeypatch, critic_use_peft):
    """QLoRA: the reward model that a LoRA critic shares loads in 4-bit like the policy; a fully
    trained critic's stays in full precision."""
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path="tiny:qwen2"))
    paths = {}
    for task in ("causal-lm", "seq-cls"):
        paths[task] = str(tmp_path / task)
        build_tiny_model("tiny:qwen2", tokenizer, task).save_pretrained(paths[task])
        tokenizer.save_pretrained(paths[task])
    built = {}

    class Captured(Exception):
        pass

    def capture(*args, **kwargs):
        built.update(kwargs)
        raise Captured

    monkeypatch.setattr(run_module, "PPOTrainer", capture)
    rows = [{"prompt": f"Question {i}:"} for i in range(8)]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    model_args = ModelArguments(load_in_4bit=True, use_peft=True, dtype="float32")
    args = ppo_config(tmp_path, sft_model_path=paths["causal-lm"], reward_model_path=paths["seq-cls"],
                      critic_use_peft=critic_use_peft)
    with pytest.raises(Captured):
        run_module.run_ppo(model_args, DataArguments(dataset_name=str(data), data_split="0,0,1", eval_split_size=0),
                           args)
    four_bit = {type(m).__name__ for m in built["reward_model"].modules()} & {"Linear4bit"}
    assert bool(four_bit) == critic_use_peft and built["value_model"] is None


def test_missing_step_outputs_name_the_step_to_run(tmp_path, no_loading):
    args = ppo_config(tmp_path, sft_model_path=str(tmp_path / "runs/sft"))
    with pytest.raises(ConfigError, match=r"Run step 1 \(rlhf-recipes sft"):
        run_module.run_ppo(ModelArguments(), DataArguments(), args)
    args = ppo_config(tmp_path, reward_model_path=str(tmp_path / "runs/reward"))
    with pytest.raises(ConfigError, match=r"Run step 2 \(rlhf-recipes reward"):
        run_module.run_ppo(ModelArguments(), DataArguments(), args)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="merge_lora"):
        run_module.run_ppo(ModelArguments(), DataArguments(), ppo_config(tmp_path, sft_model_path=str(adapter)))
    with pytest.raises(ConfigError, match="reward_model_path"):
        run_module.run_ppo(ModelArguments(), DataArguments(), ppo_config(tmp_path, reward_model_path=None))


def test_tiny_recipe_trains_with_ptx_and_saves_a_loadable_policy(tmp_path):
    rows = [{"prompt": f"Question {i}: say hi", "completion": f" hi {i}"} for i in range(24)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data_args = DataArguments(dataset_name=str(data), data_split="1,0,1", eval_split_size=0)
    args = ppo_config(tmp_path, per_device_train_batch_size=4, num_mini_batches=2, num_ppo_epochs=1, max_steps=2,
                      ptx_coef=0.5, save_strategy="no", sample_every=0)
    trainer = run_module.run_ppo(ModelArguments(), data_args, args,
                                 run_module.PPOScriptArguments(ptx_dataset_name=str(data)))
    log = [json.loads(line) for line in open(tmp_path / "ppo" / "ppo_log.jsonl", encoding="utf-8")]
    assert [row["step"] for row in log] == [1, 2] and all(row["loss/ptx"] > 0 for row in log)
    # the PPO prompts come from the ppo half of the split, never from the SFT (ptx) half
    ppo_prompts = {trainer.prompts[i] for row in log for i in row["prompt_indices"]}
    assert ppo_prompts.isdisjoint(trainer.callback_handler.callbacks[-1].dataset["prompt"])
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "ppo")
    assert policy.config.model_type == "opt" and (tmp_path / "ppo" / "critic" / "config.json").is_file()


def test_tiny_models_are_rebuilt_identically_for_the_same_seed(tmp_path, monkeypatch):
    """A resumed run rebuilds `tiny:` reward and value models: they must equal the first run's."""
    built = []

    class Captured(Exception):
        pass

    def capture(*args, **kwargs):
        built.append({k: v.clone() for k, v in kwargs["reward_model"].state_dict().items()})
        raise Captured

    monkeypatch.setattr(run_module, "PPOTrainer", capture)
    rows = [{"prompt": f"Question {i}:"} for i in range(8)]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data_args = DataArguments(dataset_name=str(data), data_split="0,0,1", eval_split_size=0)
    for seed in (1, 1, 2):
        with pytest.raises(Captured):
            run_module.run_ppo(ModelArguments(), data_args, ppo_config(tmp_path, seed=seed))
    first, again, other = built
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
