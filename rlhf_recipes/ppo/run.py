"""Step 3, PPO(-ptx): `rlhf-recipes ppo --config recipes/tiny/ppo.yaml [--field value ...]`.

Loads the SFT policy (`sft_model_path`, else `model_name_or_path`) and the reward model
(`reward_model_path`) written by steps 1 and 2, the PPO prompts of the data split, optional
PPO-ptx texts, then trains and saves. Settings that cannot work (a missing step-1/2 directory,
a LoRA adapter where full weights are needed, prompt + response beyond the model's positions,
a separate reference model with LoRA, a LoRA critic without LoRA settings, an output_dir that
cannot be written or cannot hold the checkpoints) fail before any model is loaded. With
`critic_use_peft` the reward and critic models load like the policy (4-bit with `load_in_4bit`: a
LoRA critic trains no base weight); otherwise in full precision. `tiny:<family>` in either path
builds a random tiny model instead (smoke tests without running steps 1 and 2).
"""

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import set_seed

from .. import logs
from ..artifacts import hub
from ..data import DataArguments, load_stage_dataset
from ..models import ModelArguments, is_tiny, load_model, load_tokenizer, peft_config_for
from ..models.introspection import bytes_per_parameter, max_positions, model_config, parameter_count
from ..config.parsing import ConfigError, parse_args
from ..config.paths import check_local_path
from ..config.precheck import MODEL_PATHS
from ..config.preflight import check_model_args, check_output_dir, estimate_run_bytes, kept_checkpoints
from ..artifacts.saving import MERGED_SUBDIR
from .config import PPOConfig
from .trainer import PPOTrainer


@dataclass
class PPOScriptArguments:
    """Options of the PPO recipe that are not the trainer's."""

    ptx_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Texts for PPO-ptx, read like dataset_name; the SFT part of its data_split is used (DeepSpeed-Chat "
            "mixes an unsupervised set). Needs ptx_coef > 0 to change the updates."
        },
    )
    ptx_data_split: str | None = field(
        default=None,
        metadata={
            "help": "data_split of ptx_dataset_name, whose SFT part is used; default: data_split (one file split "
            "across the steps, as recipes/tiny does). '1,0,0' uses every text of a separate corpus."
        },
    )


def _check_model_dir(name: str, path: str | None) -> None:
    """A local model directory must exist and hold full weights (not only a LoRA adapter)."""
    if path is None or is_tiny(path):
        return
    if not os.path.isdir(path):
        check_local_path(name, path, MODEL_PATHS["ppo"][name])
        return
    if not os.path.isfile(os.path.join(path, "config.json")):
        merged = os.path.join(path, MERGED_SUBDIR)
        hint = (
            f"use {merged!r}" if os.path.isdir(merged) else "rerun that step with merge_lora: true and use its merged/"
        )
        raise ConfigError(
            f"{name} {path!r} holds no full model (no config.json; a LoRA adapter?): {hint}. PPO's reference must be "
            "the SFT policy itself, so a trained SFT adapter has to be merged first."
        )


def check_ppo_config(model_args: ModelArguments, args: PPOConfig) -> str:
    """All checks that need no weights; returns the policy path."""
    policy_path = args.sft_model_path or model_args.model_name_or_path
    if policy_path is None:
        raise ConfigError("Set sft_model_path (step 1's output_dir) or model_name_or_path: the policy to train.")
    if args.reward_model_path is None:
        raise ConfigError(
            "Set reward_model_path (step 2's output_dir, or tiny:<family>). Python reward functions are available "
            "through PPOTrainer(reward_funcs=...)."
        )
    if args.ref_model_path and model_args.use_peft:
        raise ConfigError(
            "ref_model_path is set together with use_peft: with LoRA the reference is the base model with the adapter "
            "disabled (no second copy). Drop ref_model_path, or train without LoRA."
        )
    if args.critic_use_peft and not model_args.use_peft:
        raise ConfigError(
            "critic_use_peft trains the critic with the policy's LoRA settings (lora_r, lora_target_modules...): "
            "set use_peft: true."
        )
    if model_args.merge_lora and args.fsdp_launch:
        raise ConfigError(
            "merge_lora is not available under FSDP (the actor's weights are sharded when the run saves): drop it and "
            "merge the saved adapter on one device, or launch with multi_gpu.yaml (DDP) or single_gpu.yaml."
        )
    _check_model_dir("sft_model_path", policy_path)
    for name in ("reward_model_path", "value_model_path", "ref_model_path"):
        _check_model_dir(name, getattr(args, name))
    return policy_path


def preflight_ppo(model_args: ModelArguments, args: PPOConfig, policy_path: str) -> None:
    """The checks every stage runs (`rlhf_recipes.config.preflight`), before data or weights: contradictory
    model options, prompt + response beyond the policy's positions, and an output_dir that cannot be
    written or cannot hold the checkpoints (actor and critic, each with its optimizer states, or only
    their adapters with LoRA)."""
    check_model_args(model_args)
    trust = args.trust_remote_code
    kept = kept_checkpoints(args)
    policy_config = model_config(model_args, policy_path, trust)
    args.check_model_positions(max_positions(policy_config))
    actor_bytes, actor_detail = estimate_run_bytes(
        parameter_count(policy_config, "causal-lm", trust), bytes_per_parameter(model_args, policy_config), kept,
        model_args.use_peft, model_args.merge_lora,
    )
    critic_config = model_config(model_args, args.value_model_path or args.reward_model_path, trust)
    critic_bytes, critic_detail = estimate_run_bytes(
        parameter_count(critic_config, "seq-cls", trust), bytes_per_parameter(model_args, critic_config), kept,
        args.critic_use_peft, False,
    )
    check_output_dir(args.output_dir, actor_bytes + critic_bytes, f"actor: {actor_detail}; critic: {critic_detail}")


def _frozen_model_args(model_args: ModelArguments) -> ModelArguments:
    """Reward/critic/reference models load full-precision and without LoRA; only the policy is adapted."""
    return dataclasses.replace(model_args, use_peft=False, load_in_4bit=False, load_in_8bit=False)


def _critic_model_args(model_args: ModelArguments, args: PPOConfig) -> ModelArguments:
    """A LoRA critic (and the reward model it shares weights with) loads with the policy's
    quantization; a fully trained critic in full precision."""
    return model_args if args.critic_use_peft else _frozen_model_args(model_args)


def run_ppo(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: PPOConfig,
    script_args: PPOScriptArguments | None = None,
) -> PPOTrainer:
    """Step 3 end to end: checks, data, models, PPO training, final save."""
    script_args = script_args or PPOScriptArguments()
    policy_path = check_ppo_config(model_args, args)
    preflight_ppo(model_args, args, policy_path)
    model_args.model_name_or_path = model_args.model_name_or_path or policy_path
    trust = args.trust_remote_code
    tokenizer = load_tokenizer(dataclasses.replace(model_args, model_name_or_path=policy_path), trust)
    splits = load_stage_dataset(data_args, "ppo")
    ptx_dataset = None
    if script_args.ptx_dataset_name:
        ptx_args = dataclasses.replace(data_args, dataset_name=script_args.ptx_dataset_name, dataset_mixer=None,
                                       data_split=script_args.ptx_data_split or data_args.data_split)
        ptx_dataset = load_stage_dataset(ptx_args, "sft")["train"]

    frozen = _frozen_model_args(model_args)
    reward_tokenizer = tokenizer
    if not is_tiny(args.reward_model_path):
        reward_tokenizer = load_tokenizer(dataclasses.replace(frozen, model_name_or_path=args.reward_model_path), trust)
        if reward_tokenizer.get_vocab() == tokenizer.get_vocab():
            reward_tokenizer = tokenizer
    set_seed(args.seed)  # `tiny:` models are random-init: a resumed run must rebuild the same reward model
    policy = load_model(model_args, tokenizer, "causal-lm", name_or_path=policy_path, trust_remote_code=trust)
    critic_args = _critic_model_args(model_args, args)
    reward_model = load_model(critic_args, reward_tokenizer, "seq-cls", name_or_path=args.reward_model_path,
                              trust_remote_code=trust)
    value_path = args.value_model_path or (policy_path if reward_tokenizer is not tokenizer else None)
    value_model = None
    if value_path:
        value_model = load_model(critic_args, tokenizer, "seq-cls", name_or_path=value_path, trust_remote_code=trust)
    ref_model = (
        load_model(frozen, tokenizer, "causal-lm", name_or_path=args.ref_model_path, trust_remote_code=trust)
        if args.ref_model_path else None
    )
    trainer = PPOTrainer(
        args,
        tokenizer,
        policy,
        ref_model=ref_model,
        value_model=value_model,
        reward_model=reward_model,
        train_dataset=splits["train"],
        eval_dataset=splits["eval"] if len(splits["eval"]) else None,
        ptx_dataset=ptx_dataset,
        peft_config=peft_config_for(model_args, "CAUSAL_LM"),
        reward_processing_class=reward_tokenizer,
    )
    trainer.train()
    trainer.save_model(merge_lora=model_args.merge_lora)
    return trainer


def main(argv: Sequence[str] | None = None) -> None:
    """`rlhf-recipes ppo --config recipes/<model>/ppo.yaml [--field value ...]`."""
    model_args, data_args, args, script_args = parse_args(
        [ModelArguments, DataArguments, PPOConfig, PPOScriptArguments], argv
    )
    logs.configure(args)
    run_ppo(model_args, data_args, args, script_args)
    hub.finish_and_push("ppo", model_args, data_args, args, argv)
