"""The PPO recipe on 2 real CPU ranks under the ZeRO configs that test_ppo_zero.py and
tests/distributed/test_two_ranks.py leave out: ZeRO-3 with CPU offload (accelerate_configs/deepspeed_zero3_offload.yaml)
and EMA under ZeRO-2 (EMA is refused under ZeRO-3).

`recipes/tiny/ppo.yaml` as written (its data split, PPO-ptx monitoring), random tiny OPT policy and reward model
(`tiny:opt`), 2 updates of 4 rollouts per rank, launched as the docs say: `accelerate launch --config_file
accelerate_configs/<config>.yaml --num_processes 2 --mixed_precision no`, without ACCELERATE_USE_CPU (with it
accelerate drops DeepSpeed). tests/ppo/zero_recipe_worker.py records what each rank built and trained.
Under offload the trainer's torch AdamW is kept (tests/distributed/cpu_deepspeed.py), so no DeepSpeed op is
compiled: the test checks that none was.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

WORKER = str(Path(__file__).with_name("zero_recipe_worker.py"))
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
STEPS, EPOCHS, MINIBATCHES = 2, 2, 2  # recipes/tiny/ppo.yaml: num_ppo_epochs 2, num_mini_batches 2


def _tiny_ppo(output_dir: Path, *extra: str) -> list[str]:
    return ["--config", "recipes/tiny/ppo.yaml", "--sft_model_path", "tiny:opt", "--reward_model_path", "tiny:opt",
            "--output_dir", str(output_dir), "--per_device_train_batch_size", "4", "--max_prompt_length", "64",
            "--response_length", "8", "--max_steps", str(STEPS), "--eval_strategy", "no", "--save_strategy", "no",
            *extra]


def _launch(run_deepspeed_launch, config: str, argv: list[str], tmp_path: Path, env: dict | None = None) -> list[dict]:
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    run_deepspeed_launch([ACCELERATE, "launch", "--config_file", f"accelerate_configs/{config}", "--num_processes",
                          "2", "--mixed_precision", "no", WORKER, str(record_dir), json.dumps(argv)], env)
    ranks = [json.loads((record_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert (rank["num_processes"], rank["distributed_type"]) == (2, "DEEPSPEED")
        assert (rank["actor"], rank["critic"], rank["global_step"]) == ("DeepSpeedEngine", "DeepSpeedEngine", STEPS)
    assert ranks[0]["sum/actor"] == pytest.approx(ranks[1]["sum/actor"], rel=1e-9), "ranks diverged"
    return ranks


def _saved_actor_sum(output_dir: Path) -> float:
    saved, info = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float64, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    return float(sum(p.detach().abs().sum() for p in saved.parameters()))


def test_ppo_zero3_offload_recipe_trains_sharded_offloaded_engines_with_torch_adamw(tmp_path, run_deepspeed_launch):
    extensions = tmp_path / "torch_extensions"
    ranks = _launch(run_deepspeed_launch, "deepspeed_zero3_offload.yaml", _tiny_ppo(tmp_path / "ppo"), tmp_path,
                    env={"TORCH_EXTENSIONS_DIR": str(extensions)})

    for rank in ranks:
        assert (rank["zero_stage"], rank["critic_zero_stage"]) == (3, 3)
        assert (rank["offload_optimizer"], rank["offload_param"]) == ("cpu", "cpu")
        assert rank["optimizer"] == "AdamW"  # the trainer's torch AdamW, not DeepSpeedCPUAdam
        assert rank["ref_sharded"] is True  # the frozen reference is a ZeRO-3 inference engine's shard
    assert not extensions.exists() or not any(extensions.iterdir()), "a DeepSpeed op was compiled"
    log = [json.loads(line) for line in (tmp_path / "ppo" / "ppo_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and not any(row["skipped"] for row in log)
    assert _saved_actor_sum(tmp_path / "ppo") == pytest.approx(ranks[0]["sum/actor"], rel=1e-5)
    _, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ppo" / "critic", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info


def test_ppo_zero2_ema_is_updated_after_every_step_and_equal_on_both_ranks(tmp_path, run_deepspeed_launch):
    # lr 1e-3 instead of the recipe's 5e-5: the EMA then moves far more than float rounding in 8 steps
    ranks = _launch(run_deepspeed_launch, "deepspeed_zero2.yaml",
                    _tiny_ppo(tmp_path / "ppo", "--ema", "true", "--learning_rate", "1e-3"), tmp_path)

    for rank in ranks:
        assert (rank["zero_stage"], rank["critic_zero_stage"]) == (2, 2)
        assert rank["ema_updates"] == STEPS * EPOCHS * MINIBATCHES  # once per optimizer step
        assert rank["start_minus_recomputed"] > 5e-5  # the EMA had somewhere to move
        # the trainer's EMA follows the live ZeRO-2 weights step by step (fp32 vs float64 recomputation)
        assert rank["ema_minus_recomputed"] < 1e-6
        assert rank["ema_minus_actor"] > 1e-3  # and lags the raw actor
    assert ranks[0]["sum/ema"] == ranks[1]["sum/ema"], "EMA weights differ between ranks"
    saved_ema = _saved_actor_sum(tmp_path / "ppo" / "ema")
    assert saved_ema == pytest.approx(ranks[0]["sum/ema"], rel=1e-9)
    assert _saved_actor_sum(tmp_path / "ppo") == pytest.approx(ranks[0]["sum/actor"], rel=1e-9)
    assert saved_ema != pytest.approx(ranks[0]["sum/actor"], rel=1e-6)
