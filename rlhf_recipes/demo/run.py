"""`rlhf-recipes demo`: the whole InstructGPT pipeline on a laptop CPU, nothing downloaded.

A tiny random-init OPT (hidden 128, 2 layers, word-level vocabulary) is pretrained on a generated
corpus, fine-tuned on imperfect demonstrations of `Q: max d1 d2 d3 d4 A:`, turned into a reward
model on gold-ranked pairs, and optimised with PPO-ptx; held-out prompts, checked by code, show
whether RLHF helped. The settings are `DEMO_PIPELINE` (the same as recipes/tiny/pipeline.yaml).
"""

import argparse
import copy
from collections.abc import Sequence

from ..pipeline.runner import add_run_options, quiet_library_progress_bars, run_pipeline
from ..pipeline.spec import spec_from_dict

_COMMON = {
    "per_device_train_batch_size": 64,
    "per_device_eval_batch_size": 64,
    "lr_scheduler_type": "linear",
    "logging_steps": 10,
    "report_to": "none",
    "dtype": "float32",
    "activation_checkpointing": False,
}

DEMO_PIPELINE = {
    "output_dir": "runs/demo",
    "seed": 0,
    "title": "RLHF demo: the largest of four digits",
    "torch_threads": 1,
    "task": {
        "provider": "rlhf_recipes.demo.provider:MaxDigitTask",
        "num_heldout": 200,
        "num_validation": 200,
        "num_pairs": 4000,
        "num_corpus": 4000,
        "hard_error_rate": 0.75,
        "repetition_rate": 0.15,
    },
    "model": {
        "model_name_or_path": "tiny:opt",
        "model_config_overrides": {
            "hidden_size": 128,
            "ffn_dim": 512,
            "word_embed_proj_dim": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
        },
    },
    "stages": {
        "pretrain": {**_COMMON, "num_train_epochs": 2, "learning_rate": 2.0e-3, "max_length": 32,
                     "save_strategy": "no", "eval_split_size": 0},
        "sft": {**_COMMON, "num_train_epochs": 5, "learning_rate": 2.0e-3, "max_length": 32,
                "eval_split_size": 0.05, "eval_strategy": "epoch", "save_strategy": "steps", "save_steps": 30},
        "reward": {**_COMMON, "num_train_epochs": 3, "learning_rate": 1.0e-3, "max_length": 32,
                   "eval_split_size": 0.05, "eval_strategy": "epoch", "save_strategy": "no"},
        "ppo": {
            "max_steps": 60,
            "per_device_train_batch_size": 64,
            "num_mini_batches": 4,
            "num_ppo_epochs": 1,
            "learning_rate": 1.0e-4,
            "critic_learning_rate": 1.0e-4,
            "lr_scheduler_type": "constant",
            "max_prompt_length": 16,
            "response_length": 8,
            "temperature": 1.0,
            "stop_token": "eos",
            "missing_eos_penalty": 1.0,
            "kl_coef": 0.05,
            "ptx_coef": 0.5,
            "eval_split_size": 0,
            "sample_every": 5,
            "save_strategy": "no",
            "logging_steps": 10,
            "report_to": "none",
            "dtype": "float32",
        },
    },
    "selection": {"num_prompts": 200, "max_new_tokens": 8},
    "evaluation": {"num_prompts": 200, "max_new_tokens": 8, "num_examples": 12},
}


def demo_spec(output_dir: str | None = None, seed: int | None = None):
    """The demo pipeline, optionally in another run directory or with another seed."""
    return spec_from_dict(copy.deepcopy(DEMO_PIPELINE), overrides={"output_dir": output_dir, "seed": seed})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf-recipes demo", description=__doc__.split("\n\n")[0])
    add_run_options(parser)
    args = parser.parse_args(argv)
    spec = demo_spec(args.output_dir, args.seed)
    command = "rlhf-recipes demo " + " ".join(argv or [])
    quiet_library_progress_bars()
    run_pipeline(spec, args.overwrite, command=command.strip())
    return 0
