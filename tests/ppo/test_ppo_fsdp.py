"""PPO under FSDP2 (accelerate_configs/fsdp.yaml).

accelerate applies its FSDP plugin only on accelerators; torch's FSDP2 (`fully_shard`) itself runs over a gloo
mesh, so the 2-rank tests launch `accelerate launch --config_file accelerate_configs/fsdp.yaml --num_processes 2`
and the worker (fsdp_worker.py) lets accelerate's own FSDP2 preparation run on CPUs (cpu_fsdp.py). They compare
5 updates with DDP (zero_worker.py under torchrun, the same run), count the actor's all-gathers per rollout,
reload the saved models, resume a run killed after its first checkpoint, and train a LoRA actor and a LoRA
critic with PPO-ptx. Tolerance as in test_ppo_zero.py: fp32, other summation orders, rel 1e-4.
"""

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import FullyShardedDataParallelPlugin
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhf_recipes.artifacts.checkpointing import MARKER
from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.data import DataArguments
from rlhf_recipes.models import ModelArguments, build_word_tokenizer
from rlhf_recipes.models.tiny import build_tiny_model
from rlhf_recipes.ppo import PPOConfig, PPOTrainer, fsdp
from rlhf_recipes.ppo import run as run_module
from rlhf_recipes.ppo.rollout import ValueModel

from test_ppo_zero import (BIN, _assert_same_run_as_ddp, _assert_same_updates, _finish, _kill_after_first_checkpoint,
                           _log, _start)
from test_ppo_zero import _command as zero_command

WORKER = str(Path(__file__).with_name("fsdp_worker.py"))
TIMEOUT = 1500  # a 2-rank run takes 1-2 minutes on a quiet 2-core machine, over 8 under a heavy load


# ----------------------------------------------------------------------------- one process


def _config(tmp_path, **overrides):
    return PPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", sft_model_path="tiny:opt",
                     reward_model_path="tiny:opt", max_prompt_length=16, response_length=4, **overrides)


def test_ppo_fsdp2_launch_is_accepted_and_fsdp1_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --config_file fsdp.yaml` sets
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert _config(tmp_path).fsdp_launch
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match=r"needs FSDP2 .*version 1.*fsdp_version: 2"):
        _config(tmp_path)
    monkeypatch.delenv("FSDP_VERSION")  # accelerate's default is FSDP1
    with pytest.raises(ConfigError, match="needs FSDP2"):
        _config(tmp_path)


def test_ppo_fsdp_merge_lora_fails_before_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")

    def forbidden(*args, **kwargs):
        raise AssertionError("loaded before the configuration error was raised")

    monkeypatch.setattr(run_module, "load_model", forbidden)
    monkeypatch.setattr(run_module, "load_stage_dataset", forbidden)
    with pytest.raises(ConfigError, match=r"merge_lora is not available under FSDP.*multi_gpu.yaml"):
        run_module.run_ppo(ModelArguments(use_peft=True, merge_lora=True), DataArguments(), _config(tmp_path))


@pytest.mark.parametrize(("fsdp", "zero_stage", "ema", "quantized", "message"), [
    (True, 0, True, False, r"ema keeps a whole copy .*FSDP .*under fsdp.yaml.*deepspeed_zero2.yaml / multi_gpu.yaml"),
    (True, 0, False, True, r"4/8-bit .*not sharded .*under FSDP.*multi_gpu.yaml"),
    (False, 3, True, False, r"ema keeps a whole copy .*ZeRO-3 .*under deepspeed_zero3\*.yaml"),
    (False, 2, False, True, r"4/8-bit .*under DeepSpeed ZeRO-2.*multi_gpu.yaml"),
    (False, 2, True, False, None),  # the actor is whole under ZeRO-2
    (False, 0, True, True, None),  # DDP or one process: both allowed
])
def test_sharded_launches_refuse_ema_and_quantized_models_at_start(tmp_path, fsdp, zero_stage, ema, quantized,
                                                                   message):
    launch = SimpleNamespace(fsdp=fsdp, zero_stage=zero_stage)
    model = SimpleNamespace(hf_quantizer=object() if quantized else None)
    if message is None:
        PPOTrainer._check_launch(launch, _config(tmp_path, ema=ema), (model, None))
        return
    with pytest.raises(ConfigError, match=message):
        PPOTrainer._check_launch(launch, _config(tmp_path, ema=ema), (model, None))


class _Preparing:
    """Stands in for an Accelerator under FSDP: `prepare` resolves the plugin's wrap policy for the model
    as accelerate's FSDP2 preparation does first, and records the layer classes it would shard."""

    def __init__(self):
        self.state = SimpleNamespace(fsdp_plugin=FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap"))
        self.wrapped = []

    def prepare(self, model):
        self.state.fsdp_plugin.set_auto_wrap_policy(model)
        policy = self.state.fsdp_plugin.auto_wrap_policy
        assert isinstance(policy, functools.partial)
        self.wrapped.append(sorted(c.__name__ for c in policy.keywords["transformer_layer_cls"]))
        return model


def test_ppo_fsdp_wraps_each_model_by_its_own_decoder_layers():
    """accelerate keeps the layer classes of the first model it prepares; an actor and a critic of other
    architectures must each be sharded per decoder layer (the critic through ValueModel's layer classes)."""
    tokenizer = build_word_tokenizer(["a", "b"])
    accelerator = _Preparing()
    fsdp.prepare(accelerator, build_tiny_model("tiny:opt", tokenizer))
    fsdp.prepare(accelerator, ValueModel(build_tiny_model("tiny:llama", tokenizer, "seq-cls")))
    assert accelerator.wrapped == [["OPTDecoderLayer"], ["LlamaDecoderLayer"]]


# ----------------------------------------------------------------------------- two ranks


def _command(output_dir: Path, steps: int, *mode: str) -> list[str]:
    return [str(BIN / "accelerate"), "launch", "--config_file", "accelerate_configs/fsdp.yaml", "--num_processes", "2",
            "--mixed_precision", "no", WORKER, str(output_dir), str(steps), *mode]


def _ranks(output_dir: Path, command: list[str]) -> list[dict]:
    _finish(_start(command, output_dir), output_dir, TIMEOUT)
    ranks = [json.loads((output_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert ranks[0]["sum/actor"] == pytest.approx(ranks[1]["sum/actor"], rel=1e-9), "ranks diverged"
    return ranks


def _run_fsdp(output_dir: Path, steps: int = 5, *mode: str) -> list[dict]:
    return _ranks(output_dir, _command(output_dir, steps, *mode))


def _weight_sum(model) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


@pytest.fixture(scope="module")
def ddp_and_fsdp(tmp_path_factory):
    ddp_dir, fsdp_dir = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("fsdp")
    ddp = _ranks(ddp_dir, zero_command("ddp", ddp_dir, 5))[0]
    return (ddp_dir, ddp), (fsdp_dir, _run_fsdp(fsdp_dir))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ppo_fsdp_logs_the_same_5_updates_as_ddp(ddp_and_fsdp):
    (ddp_dir, ddp), (fsdp_dir, ranks) = ddp_and_fsdp

    assert (ddp["distributed_type"], ddp["actor"]) == ("MULTI_CPU", "DistributedDataParallel")
    for rank in ranks:
        assert (rank["distributed_type"], rank["actor"], rank["critic"], rank["ref"], rank["reward"]) == (
            "FSDP", "FSDPOPTForCausalLM", "FSDPValueModel", "FSDPOPTForCausalLM", "FSDPValueModel")
        # trained and frozen models alike: every weight a DTensor, this rank holding part of them
        assert rank["sharded"] == {"actor": True, "critic": True, "ref": True, "reward": True}
    _assert_same_run_as_ddp(fsdp_dir, ranks[0], ddp_dir, ddp)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ppo_fsdp_gathers_the_actor_once_per_rollout_and_saves_whole_weights(ddp_and_fsdp):
    _, (fsdp_dir, ranks) = ddp_and_fsdp

    for rank in ranks:
        assert rank["whole_weight_gathers"] == 5  # one per rollout
        # one all-gather per sharding unit of the actor when the rollout starts (the tiny OPT: its decoder layer,
        # the embeddings + final norm + tied head, the root), none while the tokens are sampled
        assert rank["all_gathers_entering"] == 5 * 3
        assert rank["all_gathers_while_sampling"] == 0
        assert rank["all_gathers_otherwise"] > 0  # training and the other models' passes gather per unit
    actor = AutoModelForCausalLM.from_pretrained(fsdp_dir, dtype=torch.float32)
    critic = AutoModelForSequenceClassification.from_pretrained(fsdp_dir / "critic", dtype=torch.float32)
    assert _weight_sum(actor) == pytest.approx(ranks[0]["sum/actor"], rel=1e-6)
    assert _weight_sum(critic) == pytest.approx(ranks[0]["sum/critic"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ppo_fsdp_killed_after_its_first_checkpoint_resumes_to_the_uninterrupted_end(tmp_path, ddp_and_fsdp):
    _, (straight, ranks) = ddp_and_fsdp
    killed = tmp_path / "killed"

    _kill_after_first_checkpoint(_command(killed, 5, "pause_after_first_save"), killed, TIMEOUT)
    checkpoint = killed / "checkpoint-2"
    assert (checkpoint / MARKER).is_file()
    for part in ("actor", "critic"):  # each rank's shard of the weights and optimizer states
        files = {p.name for p in (checkpoint / f"{part}_fsdp").iterdir()}
        assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= files, files
    assert not (checkpoint / "optimizer_actor.pt").exists()
    assert not (killed / "rank0.json").exists()

    resumed = _run_fsdp(killed, 5, "resume")[0]

    assert resumed["global_step"] == 5
    _assert_same_updates(_log(killed), _log(straight))
    for part in ("actor", "critic"):
        assert resumed[f"sum/{part}"] == pytest.approx(ranks[0][f"sum/{part}"], rel=1e-6), part


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ppo_fsdp_lora_actor_lora_critic_and_ptx(tmp_path, tiny):
    ranks = _run_fsdp(tmp_path, 3, "lora")

    for rank in ranks:
        assert (rank["actor"], rank["critic"], rank["ref"]) == ("FSDPPeftModelForCausalLM", "FSDPValueModel", None)
        assert rank["sharded"] == {"actor": True, "critic": True, "reward": True}
        assert rank["all_gathers_while_sampling"] == 0
    log = _log(tmp_path)
    assert [row["step"] for row in log] == [1, 2, 3]
    assert all(row["loss/ptx"] > 0 for row in log)
    # the base weights did not move; the adapter did (its B matrices start at 0)
    base = _weight_sum(tiny.policy())
    assert ranks[0]["sum/actor"] - ranks[0]["sum/actor_trainable"] == pytest.approx(base, rel=1e-6)
    adapter = load_file(tmp_path / "adapter_model.safetensors")
    assert sum(float(v.abs().sum()) for k, v in adapter.items() if "lora_B" in k) > 0
    assert sum(float(v.double().abs().sum()) for v in adapter.values()) == pytest.approx(
        ranks[0]["sum/actor_trainable"], rel=1e-6)
    reloaded = PeftModel.from_pretrained(tiny.policy(), tmp_path)
    trainable = sum(float(p.detach().double().abs().sum()) for n, p in reloaded.named_parameters() if "lora_" in n)
    assert trainable == pytest.approx(ranks[0]["sum/actor_trainable"], rel=1e-6)
    critic = load_file(tmp_path / "critic" / "adapter_model.safetensors")
    assert any("score" in k for k in critic) and any("lora_B" in k for k in critic)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ppo_recipe_fsdp_copies_the_reward_model_into_the_critic_evaluates_and_saves_loadable_models(tmp_path):
    """recipes/tiny/ppo.yaml as written, on random tiny models (critic copied from the reward model, reference
    from the policy), 2 updates with an evaluation (greedy responses on the gathered actor) after the second."""
    output_dir, probe = tmp_path / "ppo", tmp_path / "probe"
    probe.mkdir()
    recipe = [str(Path(__file__).with_name("fsdp_recipe.py")), str(probe), "--config", "recipes/tiny/ppo.yaml",
              "--sft_model_path", "tiny:opt", "--reward_model_path", "tiny:opt", "--output_dir", str(output_dir),
              "--per_device_train_batch_size", "4", "--max_prompt_length", "64", "--response_length", "8",
              "--max_steps", "2", "--eval_steps", "2", "--save_strategy", "no"]
    command = [str(BIN / "accelerate"), "launch", "--config_file", "accelerate_configs/fsdp.yaml", "--num_processes",
               "2", "--mixed_precision", "no", *recipe]
    _finish(_start(command, output_dir), output_dir, TIMEOUT)

    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {(r["num_processes"], r["distributed_type"], r["actor"], r["critic"], r["global_step"]) for r in ranks} == {
        (2, "FSDP", "FSDPOPTForCausalLM", "FSDPValueModel", 2)}
    log = _log(output_dir)
    assert [row["step"] for row in log] == [1, 2]
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert any("eval/scores" in row for row in history)
    _, info = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    _, info = AutoModelForSequenceClassification.from_pretrained(output_dir / "critic", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
