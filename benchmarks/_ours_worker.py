"""One timed run of rlhf_recipes.ppo.PPOTrainer; started by `ppo_vs_trl.py` in the project venv.

Usage: _ours_worker.py SPEC_JSON OUT_JSON
Same workload and settings as `_trl111_worker.py`. Settings where our defaults differ from
TRL 1.11's are set to TRL's behaviour: the spec's stop token (none in ppo_vs_trl.py), no reward clipping,
no sample tables, prompts kept whole up to the spec's max_prompt_length.
The spec's `device` (cpu or cuda) and `dtype` (of all four models' weights) are the same on both sides.
Gradient clipping, which TRL 1.11 skips whatever its max_grad_norm says, is the spec's
`max_grad_norm` (ppo_vs_trl.py --ours-max-grad-norm; 0 = no clipping, like TRL).
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _position_count import PositionCounter  # noqa: E402
from _ppo_bench_common import UpdateTimer, load_workload, write_json  # noqa: E402

from rlhf_recipes.ppo import PPOConfig, PPOTrainer  # noqa: E402
from rlhf_recipes.ppo import rollout as rollout_module  # noqa: E402


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    tokenizer, policy, ref, value, reward, prompts = load_workload(
        Path(spec["workdir"]), getattr(torch, spec.get("dtype", "float32")))
    timer = UpdateTimer(policy)
    timer.time_sampling(rollout_module, "sample_responses")  # our KV-cache sampler, not policy.generate
    positions = PositionCounter(policy=policy, ref=ref, value=value, reward=reward)
    with tempfile.TemporaryDirectory() as output_dir:
        args = PPOConfig(
            output_dir=output_dir,
            use_cpu=spec.get("device", "cpu") == "cpu",
            seed=spec["seed"],
            per_device_train_batch_size=spec["batch_size"],
            gradient_accumulation_steps=spec.get("gradient_accumulation_steps", 1),
            num_mini_batches=spec["num_mini_batches"],
            num_ppo_epochs=spec["num_ppo_epochs"],
            total_episodes=spec["updates"] * spec["batch_size"],
            local_rollout_forward_batch_size=spec.get("local_rollout_forward_batch_size", spec["batch_size"]),
            response_length=spec["response_length"],
            max_prompt_length=spec.get("max_prompt_length", 256),
            temperature=spec["temperature"],
            learning_rate=spec["learning_rate"],
            lr_scheduler_type="constant",
            kl_coef=spec["kl_coef"],
            kl_estimator=spec["kl_estimator"],
            cliprange=spec["cliprange"],
            cliprange_value=spec["cliprange_value"],
            vf_coef=spec["vf_coef"],
            gamma=spec["gamma"],
            lam=spec["lam"],
            max_grad_norm=spec["max_grad_norm"],
            stop_token=spec.get("stop_token"),
            missing_eos_penalty=None,
            reward_clip=None,
            sample_every=0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = PPOTrainer(
            args=args,
            processing_class=tokenizer,
            model=policy,
            ref_model=ref,
            value_model=value,
            reward_model=reward,
            train_dataset=Dataset.from_dict({"prompt": [row["prompt"] for row in prompts]}),
            callbacks=[timer],
        )
        trainer.train()
    logs = [log for log in timer.logs if "objective/scores" in log]
    write_json(
        Path(out_path),
        {
            **timer.result(),
            "reward": [log["objective/scores"] for log in logs],
            "kl": [log["objective/kl"] for log in logs],
            "positions": positions.result(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        },
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
