"""One timed run of trl 1.11's experimental PPOTrainer; started by `ppo_vs_trl.py` inside benchmarks/.venv-trl111.

Usage: _trl111_worker.py SPEC_JSON OUT_JSON
SPEC_JSON (written by ppo_vs_trl.py) names the prepared workload directory and the PPO settings;
`gc` is "shipped" (TRL untouched) or "neutralised" (its explicit `gc.collect()` calls made no-ops and
the heap frozen with `gc.freeze()` before training, the most favourable setting for TRL).
The spec's `device` (cpu or cuda) and `dtype` (of all four models' weights) are the same on both sides.
OUT_JSON receives per-update seconds, generation seconds and TRL's logged metrics.
"""

import gc
import json
import sys
import tempfile
from pathlib import Path

import torch
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _position_count import PositionCounter  # noqa: E402
from _ppo_bench_common import UpdateTimer, load_workload, write_json  # noqa: E402

import trl  # noqa: E402
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: E402
from trl.experimental.ppo import ppo_trainer as trl_ppo_module  # noqa: E402


class _NoCollectGC:
    """Stands in for the `gc` module inside TRL's PPO trainer: `collect()` does nothing."""

    def __getattr__(self, name):
        return getattr(gc, name)

    @staticmethod
    def collect(*_args, **_kwargs):
        return 0


def trl_batch_args(spec: dict) -> dict:
    """TRL 1.11's batch arguments for the spec's rollout batch B, M minibatches and `updates` PPO updates.

    In TRL 1.11 `per_device_train_batch_size` is the microbatch, the rollout is per_device_train_batch_size x
    gradient_accumulation_steps rows, updates = ceil(total_episodes / rollout), and accelerate steps the
    optimizer once per `gradient_accumulation_steps` microbatches. Passing our microbatch split there would
    shrink the microbatch and cut TRL's optimizer steps to fewer than one per minibatch. So TRL gets the rollout
    as its per-device batch and no accumulation: B rows per update, `updates` updates, each minibatch of B / M
    rows one microbatch and one optimizer step, as ours takes it (ours splits a minibatch into
    `gradient_accumulation_steps` microbatches for memory, with the same gradient).
    """
    return dict(per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
                total_episodes=spec["updates"] * spec["batch_size"])


def check_batch_arithmetic(args, spec: dict) -> None:
    """Stop before training if TRL derived another rollout size or update count than the spec asks for."""
    got, want = (args.local_batch_size, args.num_total_batches), (spec["batch_size"], spec["updates"])
    if got != want:
        sys.exit(f"trl 1.11 would run (rollout rows, updates) = {got}, the spec asks for {want}")


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    tokenizer, policy, ref, value, reward, prompts = load_workload(
        Path(spec["workdir"]), getattr(torch, spec.get("dtype", "float32")))
    timer = UpdateTimer(policy)
    positions = PositionCounter(policy=policy, ref=ref, value=value, reward=reward)
    with tempfile.TemporaryDirectory() as output_dir:
        args = PPOConfig(
            output_dir=output_dir,
            use_cpu=spec.get("device", "cpu") == "cpu",
            seed=spec["seed"],
            **trl_batch_args(spec),
            num_mini_batches=spec["num_mini_batches"],
            num_ppo_epochs=spec["num_ppo_epochs"],
            local_rollout_forward_batch_size=spec.get("local_rollout_forward_batch_size", spec["batch_size"]),
            response_length=spec["response_length"],
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
            stop_token=spec.get("stop_token"),
            missing_eos_penalty=None,
            num_sample_generations=0,
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
            reward_model=reward,
            value_model=value,
            train_dataset=Dataset.from_dict({"input_ids": [row["input_ids"] for row in prompts]}),
            callbacks=[timer],
        )
        check_batch_arithmetic(trainer.args, spec)
        if spec["gc"] == "neutralised":
            trl_ppo_module.gc = _NoCollectGC()
            gc.collect()
            gc.freeze()
        trainer.train()
    logs = [log for log in timer.logs if "objective/scores" in log]
    write_json(
        Path(out_path),
        {
            **timer.result(),
            "reward": [log["objective/scores"] for log in logs],
            "kl": [log["objective/kl"] for log in logs],
            "positions": positions.result(),
            "versions": {"trl": trl.__version__, "torch": torch.__version__},
        },
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
