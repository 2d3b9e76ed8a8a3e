"""recipes/qwen2.5-7b-zh/ppo.yaml (full-parameter PPO, 8 x 80 GB, ZeRO-3) on 2 real CPU ranks, launched as its
README says (`accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/ppo.py`), with
test_recipes.py's size override: saved tiny Qwen2 policy and reward model (byte-level tokenizer), the recipe's
two Chinese sources cut to short rows, prompt 128 + response 16 tokens, 2 updates, fp32.

CPU-only changes to the documented command: `--num_processes 2 --mixed_precision no`, and no
ACCELERATE_USE_CPU (with it accelerate drops DeepSpeed and runs DDP). The stage runs inside
tests/distributed/stage_probe.py, which records per rank the world size, both trained engines and their ZeRO
stage, and a checksum of the gathered actor weights (equal on both ranks when the shards were synchronised).
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE = "recipes/qwen2.5-7b-zh/ppo.yaml"
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
PROBE = str(REPO_ROOT / "tests" / "distributed" / "stage_probe.py")
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)


def _tiny_override(tiny_models, short_copies, output_dir: Path) -> list[str]:
    from rlhf_recipes.config.parsing import parse_args
    from rlhf_recipes.data import DataArguments
    from rlhf_recipes.models import ModelArguments
    from rlhf_recipes.ppo import run as ppo_run
    from rlhf_recipes.ppo.config import PPOConfig

    _, data_args, args, _ = parse_args([ModelArguments, DataArguments, PPOConfig, ppo_run.PPOScriptArguments],
                                       ["--config", RECIPE])
    assert args.bf16 and not args.ema and args.num_mini_batches == 2, "the override below assumes the recipe's shape"
    mixer = {short_copies(name): fraction for name, fraction in data_args.dataset_mixer.items()}
    return ["--config", RECIPE, "--output_dir", str(output_dir), "--max_steps", "2", "--report_to", "none",
            "--bf16", "false", "--dtype", "float32", "--eval_split_size", "2", "--eval_strategy", "no",
            "--save_strategy", "no", "--dataset_mixer", json.dumps(mixer),
            "--sft_model_path", tiny_models("qwen2"), "--reward_model_path", tiny_models("qwen2", "seq-cls"),
            "--per_device_train_batch_size", str(args.num_mini_batches * args.gradient_accumulation_steps * 2),
            "--max_prompt_length", "128", "--response_length", "16"]


def test_qwen25_7b_ppo_recipe_runs_two_steps_on_two_zero3_ranks(tiny_models, short_copies, tmp_path,
                                                                 run_deepspeed_launch):
    output_dir, probe_dir = tmp_path / "ppo", tmp_path / "probe"
    stages = [["ppo", _tiny_override(tiny_models, short_copies, output_dir)]]
    command = [ACCELERATE, "launch", "--config_file", "accelerate_configs/deepspeed_zero3.yaml", "--num_processes",
               "2", "--mixed_precision", "no", PROBE, str(probe_dir), json.dumps(stages)]
    run_deepspeed_launch(command)

    ranks = [json.loads((probe_dir / f"ppo-rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["num_processes"], r["process_index"]) for r in ranks] == [(2, 0), (2, 1)]
    for rank in ranks:
        assert (rank["distributed_type"], rank["engine"], rank["zero_stage"]) == ("DEEPSPEED", "DeepSpeedEngine", 3)
        assert rank["critic_engine"] == {"engine": "DeepSpeedEngine", "zero_stage": 3}
        assert rank["offload_optimizer"] == "none" and rank["global_step"] == 2
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6), "ranks diverged"
    log = [json.loads(line) for line in (output_dir / "ppo_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and not any(row["skipped"] for row in log)
    # full parameters, no adapter: the actor is saved whole (gathered from the ZeRO-3 shards) with its trained weights
    assert not (output_dir / "adapter_config.json").exists()
    saved, info = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32, output_loading_info=True)
    assert type(saved).__name__ == "Qwen2ForCausalLM"
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    assert float(sum(p.detach().abs().sum() for p in saved.parameters())) == pytest.approx(ranks[0]["checksum"],
                                                                                            rel=1e-4)
    critic = AutoModelForSequenceClassification.from_pretrained(output_dir / "critic", dtype=torch.float32)
    assert type(critic).__name__ == "Qwen2ForSequenceClassification"
