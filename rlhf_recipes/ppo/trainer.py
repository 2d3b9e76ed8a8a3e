"""`PPOTrainer`: orchestrates rollout -> rewards -> GAE -> clipped updates; the math is in `losses`.

One step = one rollout batch of `per_device_train_batch_size` prompts per rank, then
`num_ppo_epochs` x `num_mini_batches` optimizer steps (each of `gradient_accumulation_steps`
microbatches) for the actor and the critic, which have their own optimizers and schedulers.
"""

import copy
import json
import logging
import math
import os
import shutil
import time
import warnings
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from datasets import Dataset
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerControl, TrainerState, get_scheduler
from transformers.integrations import TensorBoardCallback, get_reporting_integration_callbacks
from transformers.trainer import DEFAULT_CALLBACKS, DEFAULT_PROGRESS_CALLBACK
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import TrainOutput, set_seed

from ..artifacts import checkpointing
from ..artifacts import hub
from ..artifacts.run_dir import PPO_LOG, PPO_SAMPLES, TRAINER_STATE
from . import scoring
from ..config.parsing import ConfigError
from . import checkpoint
from . import engines
from . import fsdp
from . import microbatches
from ..models.generation import left_pad, logprobs_from_logits, sample_responses, tokenize_prompts
from ..models.introspection import max_positions
from .callbacks import AdaptiveKLCallback, FixedKLCallback, KLCallback, PPOCallbackHandler, PtxCallback
from .config import PPOConfig
from .experience import Experience, RunningMoments, ScoreShaper, kl_per_token, make_experience
from .losses import entropy_from_logits, masked_mean, policy_loss, value_loss
from .rollout import Rollout, ValueModel, collect_rollout, response_logits, sampling_config, supports_logits_to_keep

logger = logging.getLogger("rlhf_recipes")

CRITIC_SUBDIR = "critic"
EMA_SUBDIR = "ema"


class NonFiniteError(RuntimeError):
    """Too many updates in a row had a non-finite reward, advantage, loss or gradient."""


@dataclass
class PPOTrainerState(TrainerState):
    """`TrainerState` plus what PPO must carry across a resume."""

    episode: int = 0
    kl_coef: float = 0.0
    nonfinite_skipped: int = 0
    nonfinite_in_a_row: int = 0
    reward_moments: dict | None = None


def _disable_dropout(model) -> None:
    """p = 0 in every nn.Dropout, and 0 for the rates some architectures (OPT: dropout,
    attention_dropout, layerdrop) keep as float attributes for functional dropout: left on, they
    make the training forward differ from the rollout's and the first PPO ratio differ from 1."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():
            if isinstance(value, float) and ("dropout" in name or name == "layerdrop"):
                setattr(module, name, 0.0)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def critic_lora_config(peft_config):
    """The policy's LoRA settings for the critic: task SEQ_CLS, with the scalar head `score` trained
    in full (`modules_to_save`) and none of the policy's own modules_to_save (lm_head...)."""
    config = copy.deepcopy(peft_config)
    config.task_type = "SEQ_CLS"
    config.modules_to_save = ["score"]
    config.base_model_name_or_path = None  # get_peft_model names the critic's own model
    return config


def _is_quantized(model) -> bool:
    return getattr(model, "hf_quantizer", None) is not None


class PPOTrainer:
    """PPO for language models (InstructGPT step 3), shaped like a TRL trainer.

    Args:
        args: `PPOConfig`.
        processing_class: the policy's tokenizer (left padding is used for generation).
        model: the policy (SFT model) to train.
        ref_model: reference policy for the KL penalty. Default: a frozen copy of `model`, or
            with `peft_config` the same model with its adapter disabled (no second copy). If the
            policy is already a `PeftModel` carrying a trained SFT adapter, the disabled adapter
            would be the base model, not the SFT policy: merge the SFT adapter first
            (`merge_and_unload`) and pass `peft_config` for a fresh PPO adapter, or pass `ref_model`.
        value_model: critic, an `AutoModelForSequenceClassification` (num_labels=1) reading the
            policy's tokens. Default: a trainable copy of `reward_model` (DeepSpeed-Chat), or with
            `args.critic_use_peft` the reward model itself with a LoRA adapter, scores being read
            with the adapter disabled (one copy of the reward model's weights, LLaMA-Factory).
        reward_model: scalar reward model, read at the last real token of prompt + response.
        reward_funcs: Python callables `(prompts, completions, **kwargs) -> list[float]`, summed
            with the reward model's score (see `rlhf_recipes.ppo.scoring`).
        train_dataset: rows with a `prompt` (string or chat messages); other columns reach the
            reward functions as keyword arguments.
        eval_dataset: prompts scored with greedy decoding by `evaluate()` (on eval_strategy).
        ptx_dataset: pretraining/SFT texts; with it, a `PtxCallback(ptx_dataset, args.ptx_coef)`
            is added unless `callbacks` holds one.
        peft_config: LoRA config for the policy.
        value_peft_config: with `args.critic_use_peft`, the critic's LoRA config (task_type
            SEQ_CLS). Default: `critic_lora_config(peft_config)`.
        callbacks: extra `TrainerCallback`s / `PPOCallback`s. A `KLCallback` here replaces the
            default one (`AdaptiveKLCallback` with `adaptive_kl`, else `FixedKLCallback`).
        reward_processing_class: the reward model's tokenizer when it differs from the policy's.
    """

    def __init__(
        self,
        args: PPOConfig,
        processing_class: PreTrainedTokenizerBase,
        model: PreTrainedModel,
        ref_model: PreTrainedModel | None = None,
        value_model: PreTrainedModel | None = None,
        reward_model: PreTrainedModel | None = None,
        reward_funcs: list | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        ptx_dataset: Dataset | None = None,
        peft_config=None,
        callbacks: list | None = None,
        reward_processing_class: PreTrainedTokenizerBase | None = None,
        value_peft_config=None,
    ):
        self._check_inputs(args, processing_class, model, ref_model, value_model, reward_model, reward_funcs,
                           train_dataset, peft_config, reward_processing_class)
        self._check_critic(args, value_model, reward_model, peft_config, value_peft_config)
        self.args = args
        self.processing_class = processing_class
        if args.deepspeed_plugin is not None:
            # a deepspeed_*.yaml launch (TrainingArguments built the plugin). As in HF Trainer, the arguments set up
            # the processes (gloo on CPUs) and the Accelerator, told cpu=False, puts DeepSpeed on top; with cpu=True
            # it would silently train with DDP
            _ = args.device
        self.accelerator = Accelerator(
            cpu=args.use_cpu and args.deepspeed_plugin is None,
            deepspeed_plugin=args.deepspeed_plugin,
            # the `fsdp` field (HF Trainer's way); an FSDP launch config reaches accelerate through the environment
            fsdp_plugin=FullyShardedDataParallelPlugin(**args.fsdp_plugin_args) if args.fsdp_plugin_args else None,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision="bf16" if args.bf16 else "fp16" if args.fp16 else "no",
        )
        set_seed(args.seed)
        if args.critic_use_peft:  # copied before the policy's get_peft_model fills in the config
            value_peft_config = value_peft_config or critic_lora_config(peft_config)
        policy = get_peft_model(model, peft_config) if peft_config is not None else model
        self.is_peft = isinstance(policy, PeftModel)
        self.shares_reward_model = args.critic_use_peft and value_model is None
        value_model = self._critic_network(value_model, reward_model, value_peft_config)
        self.ref_model = ref_model
        if ref_model is None and not self.is_peft:
            self.ref_model = engines.copy_model(policy)
        for module in (policy, self.ref_model, value_model, reward_model):
            if module is not None and args.disable_dropout:
                _disable_dropout(module)
        if args.activation_checkpointing:
            for network in (policy, value_model):
                network.activation_checkpointing_enable(args.activation_checkpointing_kwargs)
                if isinstance(network, PeftModel):
                    network.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
        args.check_model_positions(max_positions(policy.config))

        self.stop_token_ids = self._stop_token_ids(args, processing_class)
        self.sampling_config = sampling_config(args, processing_class, self.stop_token_ids)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.prompts = list(train_dataset["prompt"])
        self.prompt_ids, truncated = tokenize_prompts(self.prompts, processing_class, args.max_prompt_length)
        self.truncated = set(truncated)
        self.columns = {c: list(train_dataset[c]) for c in train_dataset.column_names if c != "prompt"}
        if self.truncated:
            logger.warning("PPO: %d of %d prompts exceed max_prompt_length=%d: chat prompts lose their oldest turns, then "
                           "the start of their first user message; plain prompts keep their last tokens.",
                           len(self.truncated), len(self.prompts), args.max_prompt_length)

        acc = self.accelerator
        self.world_batch_size = args.per_device_train_batch_size * acc.num_processes
        self.num_updates = self._num_updates(args, len(self.prompts))
        self.zero_stage = engines.zero_stage(acc)
        self.fsdp = fsdp.is_fsdp(acc)
        self._check_launch(args, (policy, self.ref_model, value_model, reward_model))
        critic = ValueModel(value_model)
        self.actor, self.actor_optimizer = engines.prepare_trained(
            acc, policy, self._optimizer(policy, args.learning_rate), args.micro_batch_size, args.max_grad_norm
        )
        self.critic, self.critic_optimizer = engines.prepare_trained(
            acc, critic, self._optimizer(critic, args.critic_learning_rate or args.learning_rate),
            args.micro_batch_size, args.max_grad_norm,
        )
        # on the optimizer that really steps: under ZeRO offload accelerate may swap in DeepSpeed's CPU Adam
        self.actor_scheduler = self._scheduler(engines.stepped_optimizer(self.actor_optimizer))
        self.critic_scheduler = self._scheduler(engines.stepped_optimizer(self.critic_optimizer))
        # unwrapped once: accelerate's unwrap_model re-reads package metadata on every call (~7 ms)
        self._modules = {"actor": acc.unwrap_model(self.actor), "critic": acc.unwrap_model(self.critic)}
        self._trainable = {name: [p for p in m.parameters() if p.requires_grad] for name, m in self._modules.items()}
        # accelerate's optimizer wrapper only forwards step/zero_grad unless it scales fp16 losses or
        # serves DeepSpeed/FSDP/XLA; its per-call checks cost ~7 ms per tiny update, so skip it then
        self._direct_optimizers = acc.scaler is None and acc.distributed_type in (
            DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU
        )
        wrapped = (self.actor_optimizer, self.critic_optimizer)
        self._optimizers = [o.optimizer for o in wrapped] if self._direct_optimizers else list(wrapped)
        if self.ref_model is not None:
            self.ref_model = engines.prepare_frozen(acc, self.ref_model.eval().requires_grad_(False))
        reward_context = nullcontext
        if self.shares_reward_model:  # the critic's LoRA and head stay trainable; the disabled adapter is the RM
            reward_model, reward_context = self.unwrapped_critic, self.unwrapped_critic.model.disable_adapter
        elif reward_model is not None:
            reward_model = reward_model.eval().requires_grad_(False)
            # under FSDP the module called must be the sharded root, so the reward model is sharded as it is read
            reward_model = engines.prepare_frozen(acc, ValueModel(reward_model) if self.fsdp else reward_model)
        self.scorer = scoring.RewardScorer(
            processing_class, reward_model, reward_funcs, reward_processing_class, args.local_rollout_forward_batch_size,
            reward_context,
        )
        self.shaper = ScoreShaper(args)
        # fp32: in bf16 an update of (1 - ema_decay) x a small difference rounds away and the EMA never moves.
        self.ema = copy.deepcopy(self.unwrapped_actor).requires_grad_(False).float() if args.ema else None
        if self.ema is not None:
            live = dict(self.unwrapped_actor.named_parameters())
            pairs = [(p, live[n].detach()) for n, p in self.ema.named_parameters() if live[n].requires_grad]
            self._ema_pairs = tuple(list(side) for side in zip(*pairs, strict=True))

        callbacks = list(callbacks or [])
        if not any(isinstance(cb, KLCallback) for cb in callbacks):
            adaptive = args.adaptive_kl
            callbacks.append(AdaptiveKLCallback(args.target_kl, args.kl_horizon) if adaptive else FixedKLCallback())
        if ptx_dataset is not None and not any(isinstance(cb, PtxCallback) for cb in callbacks):
            callbacks.append(PtxCallback(ptx_dataset, args.ptx_coef))
        reporting = get_reporting_integration_callbacks(args.report_to)
        progress = PrinterCallback if args.disable_tqdm else DEFAULT_PROGRESS_CALLBACK
        self.callback_handler = PPOCallbackHandler(
            DEFAULT_CALLBACKS + reporting + [progress] + callbacks,
            self.unwrapped_actor, processing_class, self.actor_optimizer, self.actor_scheduler,
        )
        self.control = TrainerControl()
        self.state = self._new_state(PPOTrainerState())
        set_seed(args.seed + acc.process_index)  # same initial weights everywhere, independent sampling per rank
        if acc.is_main_process:
            os.makedirs(args.output_dir, exist_ok=True)

    # ----------------------------------------------------------------------------- setup helpers

    @staticmethod
    def _check_inputs(args, tokenizer, model, ref_model, value_model, reward_model, reward_funcs, train_dataset,
                      peft_config, reward_tokenizer):
        if train_dataset is None or "prompt" not in train_dataset.column_names:
            raise ValueError("train_dataset must be a Dataset with a 'prompt' column.")
        if len(train_dataset) == 0:
            raise ValueError("train_dataset is empty.")
        if reward_model is None and not reward_funcs:
            raise ValueError("Pass a reward_model, reward_funcs, or both.")
        if ref_model is not None and peft_config is not None:
            raise ConfigError(
                "A separate ref_model was given together with LoRA (peft_config), whose reference is the base "
                "model with the adapter disabled; drop one of them."
            )
        if ref_model is model:
            raise ValueError("ref_model must not be the policy object itself (pass None for a frozen copy).")
        if isinstance(model, PeftModel) and peft_config is not None:
            raise ValueError(
                "The policy already carries a LoRA adapter: merge it (merge_and_unload) before adding peft_config."
            )
        if isinstance(model, PeftModel) and ref_model is None:
            raise ValueError(
                "The policy is a PeftModel with a trained adapter and no ref_model: its disabled adapter would be the "
                "base model, not the SFT policy. Merge the SFT adapter first and pass peft_config, or pass ref_model."
            )
        if value_model is None and reward_model is None:
            raise ValueError("Pass a value_model (critic) when scoring with reward_funcs only.")
        if value_model is None and reward_tokenizer is not None and reward_tokenizer is not tokenizer:
            raise ValueError(
                "The reward model uses another tokenizer, so it cannot initialise the critic: pass value_model."
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer needs a pad token (rlhf_recipes.models.load_tokenizer sets one).")

    @staticmethod
    def _check_critic(args, value_model, reward_model, peft_config, value_peft_config):
        start = value_model if value_model is not None else reward_model
        if not args.critic_use_peft:
            if value_peft_config is not None:
                raise ConfigError("value_peft_config was given but critic_use_peft is false: set critic_use_peft "
                                  "for a LoRA critic, or drop value_peft_config.")
            if _is_quantized(start):
                raise ConfigError("The critic would be a trainable copy of a 4/8-bit model, whose quantized layers "
                                  "cannot train: set critic_use_peft (a LoRA critic) or pass a full-precision "
                                  "value_model.")
            return
        if peft_config is None and value_peft_config is None:
            raise ConfigError("critic_use_peft needs a LoRA config: use_peft (peft_config, whose settings the critic "
                              "copies) or value_peft_config.")
        if value_peft_config is not None and value_peft_config.task_type != "SEQ_CLS":
            raise ConfigError(f"value_peft_config.task_type must be SEQ_CLS (a LoRA critic trains its `score` head), "
                              f"got {value_peft_config.task_type!r}.")
        if isinstance(start, PeftModel):
            raise ConfigError("The critic's model already carries a LoRA adapter: merge it (merge_and_unload) "
                              "before critic_use_peft adds one.")

    def _check_launch(self, args, models) -> None:
        """Combinations the DeepSpeed or FSDP launch cannot run, refused before any model is prepared
        (FSDP1 was refused by the config)."""
        if self.fsdp:
            launch, config_file, shards_actor = "FSDP", "fsdp.yaml", True
        elif self.zero_stage:
            launch, config_file = f"DeepSpeed ZeRO-{self.zero_stage}", f"deepspeed_zero{self.zero_stage}*.yaml"
            shards_actor = self.zero_stage == 3
        else:
            return
        if any(model is not None and _is_quantized(model) for model in models):
            raise ConfigError(
                f"A 4/8-bit (bitsandbytes) model is not sharded by the PPO trainer under {launch}. Train QLoRA PPO "
                "with accelerate_configs/multi_gpu.yaml (DDP) or single_gpu.yaml, or load the models in 16 bits "
                f"(load_in_4bit/load_in_8bit false) to keep {config_file}."
            )
        if args.ema and shards_actor:
            raise ConfigError(
                f"ema keeps a whole copy of the actor on every rank, which {launch} exists to avoid. Drop ema under "
                f"{config_file}, or use deepspeed_zero2.yaml / multi_gpu.yaml, where the actor is whole."
            )

    @staticmethod
    def _critic_network(value_model, reward_model, lora_config):
        """The critic's sequence-classification model: `value_model`, else a trainable copy of the
        reward model; with a `lora_config`, that model (else the reward model itself, no copy) with
        a LoRA adapter."""
        if lora_config is None:
            return value_model if value_model is not None else engines.copy_model(reward_model)
        critic = get_peft_model(value_model if value_model is not None else reward_model, lora_config)
        for param in critic.parameters():
            if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
                # the head's copy: Adam steps below a half-precision weight's resolution would be lost,
                # and fp16 loss scaling refuses half-precision gradients (peft upcasts LoRA weights itself)
                param.data = param.data.float()
        return critic

    @staticmethod
    def _stop_token_ids(args, tokenizer) -> list[int]:
        if args.stop_token_id is not None:
            return [args.stop_token_id]
        if args.stop_token is None:
            return []
        token = tokenizer.eos_token if args.stop_token == "eos" else args.stop_token
        token_id = tokenizer.convert_tokens_to_ids(token) if token is not None else None
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ConfigError(f"stop_token {args.stop_token!r} is not a single token of the tokenizer.")
        return [token_id]

    def _num_updates(self, args, num_prompts: int) -> int:
        if args.max_steps > 0:
            return args.max_steps
        episodes = args.total_episodes or int(args.num_train_epochs * num_prompts)
        return max(math.ceil(episodes / self.world_batch_size), 1)

    def _optimizer(self, module, lr: float):
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args)
        kwargs = dict(kwargs, lr=lr)
        params = [p for p in module.parameters() if p.requires_grad]
        return optimizer_cls([{"params": params, "weight_decay": self.args.weight_decay}], **kwargs)

    def _scheduler(self, optimizer):
        return get_scheduler(
            self.args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=self.args.get_warmup_steps(self.num_updates),
            num_training_steps=self.num_updates,
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs or {},
        )

    def _new_state(self, state: PPOTrainerState) -> PPOTrainerState:
        args, acc = self.args, self.accelerator
        state.max_steps = self.num_updates
        state.logging_steps = self._absolute(args.logging_steps)
        state.save_steps = self._absolute(args.save_steps)
        state.eval_steps = self._absolute(args.eval_steps or args.logging_steps)
        state.train_batch_size = self.world_batch_size
        state.num_train_epochs = math.ceil(self.num_updates * self.world_batch_size / len(self.prompts))
        state.is_local_process_zero = acc.is_local_main_process
        state.is_world_process_zero = acc.is_main_process
        state.log_history = state.log_history or []
        return state

    def _absolute(self, steps: float) -> int:
        return math.ceil(self.num_updates * steps) if steps < 1 else int(steps)

    @property
    def unwrapped_actor(self):
        return self._modules["actor"]

    @property
    def unwrapped_critic(self) -> ValueModel:
        return self._modules["critic"]

    def add_callback(self, callback) -> None:
        self.callback_handler.add_callback(callback)

    # ----------------------------------------------------------------------------- data order

    def global_prompt_indices(self, step: int) -> list[int]:
        """Prompts of update `step` (0-based), all ranks: the stream of per-epoch permutations
        (seeded by seed + epoch) cut into consecutive batches. A pure function of (seed, step),
        so a resumed run continues exactly where the checkpoint left off."""
        n = len(self.prompts)
        start = step * self.world_batch_size
        out, perms = [], {}
        for position in range(start, start + self.world_batch_size):
            epoch = position // n
            if epoch not in perms:
                perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(self.args.seed + epoch))
            out.append(int(perms[epoch][position % n]))
        return out

    def _local(self, indices: list[int]) -> list[int]:
        size = self.args.per_device_train_batch_size
        return indices[self.accelerator.process_index * size : (self.accelerator.process_index + 1) * size]

    # ----------------------------------------------------------------------------- training loop

    def train(self, resume_from_checkpoint: str | bool | None = None) -> TrainOutput:
        """Run PPO until `max_steps`/`total_episodes`; resume from a checkpoint when asked
        (True = latest complete one in output_dir; default: `args.resume_from_checkpoint`)."""
        args = self.args
        value = args.resume_from_checkpoint if resume_from_checkpoint is None else resume_from_checkpoint
        resume = checkpointing.resolve_resume(value, args.output_dir)
        if resume is not None:
            self._load_checkpoint(resume)
        if self.accelerator.is_main_process:  # the logs describe exactly the updates the weights come from
            for name in (PPO_LOG, PPO_SAMPLES):
                checkpointing.trim_step_log(os.path.join(args.output_dir, name), self.state.global_step)
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        while self.state.global_step < self.num_updates and not self.control.should_training_stop:
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            record = self._step()
            self.state.global_step += 1
            self.state.episode += self.world_batch_size
            self.state.epoch = self.state.episode / len(self.prompts)
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            self._log(record)
            if self.state.nonfinite_in_a_row >= args.max_nonfinite_steps:
                raise NonFiniteError(
                    f"{self.state.nonfinite_in_a_row} updates in a row had a non-finite reward, advantage, loss or "
                    f"gradient (max_nonfinite_steps={args.max_nonfinite_steps}); stopped at step "
                    f"{self.state.global_step}. The last complete checkpoint is "
                    f"{checkpointing.latest_checkpoint(args.output_dir)}."
                )
            if self.control.should_evaluate and self.eval_dataset is not None:
                self.evaluate()
            if self.control.should_save:
                self._save_checkpoint()
                self.control = self.callback_handler.on_save(args, self.state, self.control)
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        last = self.state.log_history[-1] if self.state.log_history else {}
        return TrainOutput(self.state.global_step, last.get("loss/policy", float("nan")), last)

    def _step(self) -> dict:
        """One rollout and its PPO update; returns the log record (metrics averaged over ranks)."""
        args, acc = self.args, self.accelerator
        started = time.perf_counter()
        indices = self.global_prompt_indices(self.state.global_step)
        local = self._local(indices)
        rollout = self._rollout(local)
        prompts = [self.prompts[i] for i in local]
        raw_scores = self.scorer(rollout, prompts, {c: [v[i] for i in local] for c, v in self.columns.items()})
        scores = self.shaper(raw_scores, rollout.has_stop, gather=acc.gather)
        kl = kl_per_token(rollout, args.kl_estimator)
        # collective 1: rollout statistics for the KL callbacks, and whether any rank saw a non-finite input
        checked = (scores, rollout.logprobs, rollout.ref_logprobs, rollout.values)
        local_bad = sum(not torch.isfinite(t).all() for t in checked)
        summed = acc.reduce(torch.stack([kl.sum(1).mean(), scores.mean(), self._flag(local_bad)]), "sum")
        rollout_stats = {"kl": summed[0].item() / acc.num_processes, "scores": summed[1].item() / acc.num_processes,
                         "num_samples": self.world_batch_size}
        self.control = self.callback_handler.on_rollout_end(args, self.state, self.control, rollout_stats)
        experience = make_experience(rollout, raw_scores, scores, kl, self.state.kl_coef, args)
        # collective 2: every rank must take the same branch, or the next all-reduce would hang
        bad = summed[2] + acc.reduce(self._flag(not torch.isfinite(experience.advantages).all()), "sum")
        rollout_time = time.perf_counter() - started
        update = self._update(rollout, experience) if bad.item() == 0 else None
        self.actor_scheduler.step()
        self.critic_scheduler.step()
        self._count_nonfinite(skipped=update is None)
        local_metrics = {
            **experience.metrics(rollout),
            "prompts/truncated": self._flag(sum(i in self.truncated for i in local)) * acc.num_processes,
            **(update or {}),
        }
        # collective 3: all metrics in one all-reduce
        names = list(local_metrics)
        values = acc.reduce(torch.stack([local_metrics[k].float().to(acc.device) for k in names]), "mean")
        record = dict(zip(names, values.tolist(), strict=True))
        record.update({
            "kl_coef": experience.kl_coef,
            "lr/actor": self.actor_scheduler.get_last_lr()[0],
            "lr/critic": self.critic_scheduler.get_last_lr()[0],
            "nonfinite_skipped": self.state.nonfinite_skipped,
            "skipped": update is None,
            "time/rollout": rollout_time,
            "time/step": time.perf_counter() - started,
            "prompt_indices": indices,
        })
        self._maybe_log_samples(rollout, prompts, experience.scores)
        return record

    def _rollout(self, local: list[int]) -> Rollout:
        acc = self.accelerator
        prompt_ids, prompt_mask = left_pad([self.prompt_ids[i] for i in local], self.processing_class.pad_token_id)
        actor, critic = self.unwrapped_actor.eval(), self.unwrapped_critic.eval()
        if self.ref_model is None:  # LoRA: the reference is the policy with its adapter disabled
            ref_policy, ref_context = actor, actor.disable_adapter
        else:
            ref_policy, ref_context = self.ref_model, nullcontext
        return collect_rollout(
            local, prompt_ids.to(acc.device), prompt_mask.to(acc.device), actor, ref_policy, ref_context, critic,
            self.sampling_config, self.args.local_rollout_forward_batch_size,
            sampling_context=lambda: engines.whole_weights(self.actor, self.zero_stage),
        )

    def _flag(self, value) -> torch.Tensor:
        return torch.tensor(float(value), device=self.accelerator.device)

    def _count_nonfinite(self, skipped: bool) -> None:
        self.state.nonfinite_skipped += skipped
        self.state.nonfinite_in_a_row = self.state.nonfinite_in_a_row + 1 if skipped else 0
        if skipped:
            warnings.warn(f"Step {self.state.global_step + 1}: non-finite reward, advantage, loss or gradient; "
                          "the update was skipped.", stacklevel=3)

    def _update(self, rollout: Rollout, experience: Experience) -> dict | None:
        """num_ppo_epochs x num_mini_batches optimizer steps; None if a gradient was non-finite
        (that step and the rest of the update are skipped).

        Each minibatch's rows are grouped by length into its microbatches (`microbatches`): under DeepSpeed
        and FSDP `gradient_accumulation_steps` of them (the engines and collectives count calls), otherwise
        packed into as few as fit in that many untrimmed ones. The minibatch's loss and per-token metrics are
        means over all of its response tokens: each microbatch's per-token means are weighted by its share of
        them, so the gradients do not depend on how the rows are grouped. Extra actor losses (ptx) take one batch
        per microbatch of the user's size, `gradient_accumulation_steps` per minibatch, also when its rows are
        packed into fewer: a packed chunk stands for some of those microbatches and computes the extra losses of
        each (`_extra_backward`), so which ptx rows an update reads and how they are weighted do not depend on
        packing either. The minibatch's extra loss is their mean."""
        args = self.args
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + self.state.global_step)
        batch = rollout.responses.shape[0]
        accumulation = args.gradient_accumulation_steps
        num_micro = args.num_ppo_epochs * args.num_mini_batches * accumulation
        pack = not (self.zero_stage or self.fsdp)
        keep_only = supports_logits_to_keep(self.unwrapped_actor)
        sums: dict[str, torch.Tensor] = {}
        self.actor.train()
        self.critic.train()
        micro_step = 0
        tokens = rollout.response_mask.sum(1)
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(batch, generator=generator).to(rollout.responses.device)
            for start in range(0, batch, args.mini_batch_size):
                minibatch = order[start : start + args.mini_batch_size]
                total = float(tokens[minibatch].sum())
                parts = microbatches.chunks(rollout.prompt_mask, rollout.response_mask, args.micro_batch_size,
                                            minibatch, pack=pack)
                for index, chunk in enumerate(parts):
                    last = index == len(parts) - 1
                    share = float(tokens[chunk.rows].sum()) / total
                    # the user-sized microbatches this chunk stands for (one each when nothing is packed)
                    stands_for = range(micro_step + index * accumulation // len(parts),
                                       micro_step + (index + 1) * accumulation // len(parts))
                    with self._gradient_sync(last):
                        for step in stands_for[:-1]:
                            for name, value in self._extra_backward(step, num_micro).items():
                                sums[name] = sums.get(name, 0.0) + value
                        terms = self._micro_losses(rollout, experience, chunk, share, keep_only,
                                                   stands_for[-1], num_micro)
                        for name, value in terms.items():
                            if "/" in name:
                                sums[name] = sums.get(name, 0.0) + value.detach()
                        if not self._backward_and_step(terms, last):
                            return None
                micro_step += accumulation
        steps = args.num_ppo_epochs * args.num_mini_batches
        return {name: value / steps for name, value in sums.items()}

    def _gradient_sync(self, last: bool):
        """Gradients are all-reduced at a minibatch's last microbatch only (DDP and FSDP; DeepSpeed engines
        count their own accumulation steps)."""
        if self.zero_stage or last:
            return nullcontext()
        stack = ExitStack()
        for model in (self.actor, self.critic):
            stack.enter_context(self.accelerator.no_sync(model))
        return stack

    def _backward_and_step(self, terms: dict, last: bool) -> bool:
        """Backward of one microbatch, then the optimizer steps after a minibatch's `last` one; False if
        a step was refused for a non-finite gradient. Under DeepSpeed each engine backpropagates its
        own loss (their parameters are disjoint, so the gradients are those of the sum), clips its
        own norm and skips its own step when that norm is not finite (DeepSpeed's overflow check)."""
        if not self.zero_stage:
            self.accelerator.backward(terms["loss"])
            return not last or self._optimizer_step()
        self.actor.backward(terms["actor_loss"])
        self.critic.backward(terms["critic_loss"])
        boundary = self.actor.is_gradient_accumulation_boundary()
        self.actor.step()
        self.critic.step()
        if not boundary:
            return True
        ok = self.actor.was_step_applied() and self.critic.was_step_applied()
        if ok and self.ema is not None:
            self._update_ema()
        return ok

    def _extra_terms(self, micro_step: int, num_micro: int) -> tuple:
        """The callbacks' extra actor losses of one user-sized microbatch: (the sum of coef * loss, 0 when every
        coef is 0; their metrics `loss/<name>`, each a mean's share over the `gradient_accumulation_steps`
        microbatches of a minibatch). The loss is weighted like `_micro_losses`' PPO term, which accelerate and
        DeepSpeed divide by the accumulation steps."""
        extra = self.callback_handler.compute_extra_actor_loss(
            self.args, self.state, self.control, self.unwrapped_actor, micro_step=micro_step,
            num_micro_steps=num_micro, process_index=self.accelerator.process_index,
            num_processes=self.accelerator.num_processes,
        )
        loss = sum(coef * term for coef, term in extra.values() if coef)
        metrics = {f"loss/{name}": term / self.args.gradient_accumulation_steps for name, (_, term) in extra.items()}
        return loss, metrics

    def _extra_backward(self, micro_step: int, num_micro: int) -> dict:
        """Backward of the extra losses of a microbatch that a packed chunk stands for besides its own (`_update`;
        unsharded launches only, the others do not pack), one batch's activations at a time; returns their
        metrics. It runs before the chunk's forward through the DDP wrapper (which would take this backward for
        its all-reduce) and without gradient sync: the chunk's own backward all-reduces everything accumulated."""
        loss, metrics = self._extra_terms(micro_step, num_micro)
        if torch.is_tensor(loss):
            with self.accelerator.no_sync(self.actor):
                self.accelerator.backward(loss)
        return {name: value.detach() for name, value in metrics.items()}

    def _micro_losses(self, rollout, experience, chunk, share, keep_only, micro_step, num_micro) -> dict:
        """Losses and metrics of one of a minibatch's chunks: its per-token means times its `share` of the
        minibatch's response tokens, plus the extra losses of user-sized microbatch `micro_step` over the
        `gradient_accumulation_steps` of them (see `_update`). The losses are then multiplied by the accumulation
        steps that accelerate and DeepSpeed divide by."""
        args = self.args
        width = chunk.response_width
        mask = chunk.response(rollout.response_mask).float()
        responses = chunk.response(rollout.responses)
        ids = chunk.sequences(rollout.prompt_ids, rollout.responses)
        attention = chunk.sequences(rollout.prompt_mask, rollout.response_mask)
        logits = response_logits(self.actor, ids, attention, width, keep_only).float() / args.temperature
        logprobs = logprobs_from_logits(logits, responses)
        values = self.critic(ids, attention)[:, -width - 1 : -1].float()
        old_logprobs = chunk.response(rollout.logprobs)
        pg_loss, clipfrac, approxkl = (share * term for term in policy_loss(
            logprobs, old_logprobs, chunk.response(experience.advantages), mask, args.cliprange
        ))
        vf_loss, vf_clipfrac = (share * term for term in value_loss(
            values, chunk.response(rollout.values), chunk.response(experience.returns), mask, args.cliprange_value
        ))
        extra_loss, extra_metrics = self._extra_terms(micro_step, num_micro)
        scale = args.gradient_accumulation_steps
        actor_loss = scale * pg_loss + extra_loss
        critic_loss = scale * args.vf_coef * vf_loss
        with torch.no_grad():
            entropy = share * masked_mean(entropy_from_logits(logits), mask)
            ratio = share * masked_mean(torch.exp(logprobs - old_logprobs), mask)
        return {
            "loss": actor_loss + critic_loss,
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "loss/policy": pg_loss,
            "loss/value": vf_loss,
            "policy/approxkl": approxkl,
            "policy/clipfrac": clipfrac,
            "policy/entropy": entropy,
            "val/clipfrac": vf_clipfrac,
            "val/ratio": ratio,
            **extra_metrics,
        }

    def _optimizer_step(self) -> bool:
        """Clip and step both optimizers; False (nothing stepped) if a gradient norm is non-finite.
        Norms are computed after DDP's all-reduce, so every rank takes the same branch."""
        max_norm = self.args.max_grad_norm or float("inf")
        self.accelerator.unscale_gradients()  # fp16 loss scaling; a no-op otherwise
        # plain torch clipping on cached parameter lists: accelerate's clip_grad_norm_ walks every
        # module of every prepared model per call (~4 ms per tiny update step)
        norms = [torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)
                 for params in self._trainable.values()]
        ok = all(torch.isfinite(norm) for norm in norms)
        if ok:
            for params, norm in zip(self._trainable.values(), norms, strict=True):
                # clip_grad_norm_ scales by min(1, max_norm / (norm + 1e-6)): skip the pass over the
                # gradients when that factor is 1
                if norm + 1e-6 > max_norm:
                    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
            for optimizer in self._optimizers:
                optimizer.step()
            if self.ema is not None:
                self._update_ema()
        if self._direct_optimizers:
            for params in self._trainable.values():
                for param in params:
                    param.grad = None
        else:
            for optimizer in self._optimizers:
                optimizer.zero_grad(set_to_none=True)
        return ok

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * actor, over trainable parameters (DeepSpeed-Chat)."""
        ema, live = self._ema_pairs
        torch._foreach_lerp_(ema, [p.to(e.dtype) for e, p in zip(ema, live, strict=True)], 1.0 - self.args.ema_decay)

    # ----------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Greedy responses to the eval prompts (split across ranks), scored like rollouts.
        Logs and returns `eval/scores`, `eval/response_length` and `eval/stop_frac`."""
        args, acc = self.args, self.accelerator
        everything = list(self.eval_dataset["prompt"])
        prompts = everything[acc.process_index :: acc.num_processes]
        real = len(prompts)
        # every rank runs as many chunks (ZeRO-3 forwards are collectives): the short ones repeat a prompt,
        # which does not count
        prompts += everything[:1] * (math.ceil(len(everything) / acc.num_processes) - real)
        ids, _ = tokenize_prompts(prompts, self.processing_class, args.max_prompt_length)
        config = replace(self.sampling_config, greedy=True)
        actor = self.unwrapped_actor.eval()
        totals = torch.zeros(3, device=acc.device)
        size = args.local_rollout_forward_batch_size
        for start in range(0, len(ids), size):
            prompt_ids, prompt_mask = left_pad(ids[start : start + size], self.processing_class.pad_token_id)
            prompt_ids, prompt_mask = prompt_ids.to(acc.device), prompt_mask.to(acc.device)
            with engines.whole_weights(self.actor, self.zero_stage):
                responses, response_mask, has_stop, _ = sample_responses(actor, prompt_ids, prompt_mask, config, size)
            rollout = Rollout([], prompt_ids, prompt_mask, responses, response_mask, has_stop)
            raw = self.scorer(rollout, prompts[start : start + size], None)
            scores = self.shaper(raw, has_stop)
            counted = (torch.arange(start, start + len(scores), device=acc.device) < real).float()
            rows = torch.stack([scores, response_mask.sum(1).float(), has_stop.float()])
            totals += (rows * counted).sum(1)
        totals = acc.reduce(torch.cat([totals, torch.tensor([float(real)], device=acc.device)]), "sum")
        count = max(totals[3].item(), 1.0)
        metrics = {"eval/scores": totals[0].item() / count, "eval/response_length": totals[1].item() / count,
                   "eval/stop_frac": totals[2].item() / count}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        return metrics

    # ----------------------------------------------------------------------------- logging

    def log(self, logs: dict) -> None:
        """Append to `state.log_history` and hand to the reporting callbacks (as `Trainer.log`)."""
        logs = {k: v for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        logs["epoch"] = self.state.epoch
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)

    def _log(self, record: dict) -> None:
        record = {"step": self.state.global_step, "episode": self.state.episode, **record}
        if self.accelerator.is_main_process:
            clean = {k: _finite(v) if isinstance(v, float) else v for k, v in record.items()}
            with open(os.path.join(self.args.output_dir, PPO_LOG), "a", encoding="utf-8") as handle:
                handle.write(json.dumps(clean) + "\n")
        if self.control.should_log:
            self.log({k: v for k, v in record.items() if k not in ("step", "skipped", "prompt_indices")})

    def _maybe_log_samples(self, rollout, prompts, scores) -> None:
        """Every `sample_every` steps, the main rank's first rows: prompt, completion, score."""
        step = self.state.global_step + 1
        if not self.args.sample_every or step % self.args.sample_every or not self.accelerator.is_main_process:
            return
        count = min(self.args.num_sample_completions, len(prompts))
        completions = self.scorer.decode(rollout)[:count]
        # the prompt as the policy saw it: chat role markers are special tokens (prompt_ids hold no padding)
        rows = [
            {"step": step, "prompt": self.processing_class.decode(self.prompt_ids[i], skip_special_tokens=False),
             "completion": completion, "score": _finite(float(score))}
            for i, completion, score in zip(rollout.indices[:count], completions, scores[:count].tolist(), strict=True)
        ]
        with open(os.path.join(self.args.output_dir, PPO_SAMPLES), "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        table = "| prompt | completion | score |\n|---|---|---|\n" + "".join(
            f"| {r['prompt']!r} | {r['completion']!r} | {r['score']} |\n" for r in rows
        )
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                callback.tb_writer.add_text("samples", table, step)

    # ----------------------------------------------------------------------------- checkpoints

    def _save_checkpoint(self) -> None:
        """Every rank writes its RNG state, the main rank the rest, into a temp dir that becomes
        checkpoint-<step> only when complete (see `checkpoint`)."""
        acc, step = self.accelerator, self.state.global_step
        tmp = checkpointing.staging_dir(self.args.output_dir, step)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
        acc.wait_for_everyone()
        checkpoint.save_rng_state(tmp, acc.process_index)
        if self.zero_stage:  # every rank writes its shard of the weights and of the optimizer states
            for name, engine in self._engines().items():
                checkpoint.save_engine(engine, tmp, name)
        elif self.fsdp:  # the same, through torch.distributed.checkpoint
            for name, engine in self._engines().items():
                checkpoint.save_sharded(engine, engines.stepped_optimizer(self._optimizer_of(name)), tmp, name)
        if acc.is_main_process:
            if not self.zero_stage and not self.fsdp:
                self.unwrapped_actor.save_pretrained(os.path.join(tmp, "actor"))
                self.unwrapped_critic.model.save_pretrained(os.path.join(tmp, CRITIC_SUBDIR))
            self.processing_class.save_pretrained(os.path.join(tmp, "actor"))
            if self.ema is not None:
                self.ema.save_pretrained(os.path.join(tmp, EMA_SUBDIR))
            for name, obj in self._stateful().items():
                torch.save(obj.state_dict(), os.path.join(tmp, f"{name}.pt"))
            self.state.reward_moments = self.shaper.moments.state_dict()
            self.state.save_to_json(os.path.join(tmp, TRAINER_STATE))
        acc.wait_for_everyone()
        if acc.is_main_process:
            checkpointing.commit(self.args.output_dir, tmp, step, self.args.save_total_limit)
        acc.wait_for_everyone()

    def _engines(self) -> dict:
        return {"actor": self.actor, CRITIC_SUBDIR: self.critic}

    def _optimizer_of(self, name: str):
        return self.actor_optimizer if name == "actor" else self.critic_optimizer

    def _stateful(self) -> dict:
        """What the main rank saves with torch.save (under DeepSpeed and FSDP every rank saves its shard of the
        optimizer states)."""
        optimizers = {} if self.zero_stage or self.fsdp else {
            "optimizer_actor": self.actor_optimizer, "optimizer_critic": self.critic_optimizer,
        }
        return {**optimizers, "scheduler_actor": self.actor_scheduler, "scheduler_critic": self.critic_scheduler}

    def _load_checkpoint(self, path: str) -> None:
        if self.zero_stage:
            for name, engine in self._engines().items():
                checkpoint.load_engine(engine, path, name)
        elif self.fsdp:
            for name, engine in self._engines().items():
                checkpoint.load_sharded(engine, engines.stepped_optimizer(self._optimizer_of(name)), path, name)
        else:
            checkpoint.load_weights(self.unwrapped_actor, os.path.join(path, "actor"))
            checkpoint.load_weights(self.unwrapped_critic.model, os.path.join(path, CRITIC_SUBDIR))
        if self.ema is not None:
            checkpoint.load_weights(self.ema, os.path.join(path, EMA_SUBDIR))
        for name, obj in self._stateful().items():
            obj.load_state_dict(torch.load(os.path.join(path, f"{name}.pt"), weights_only=False))
        state = PPOTrainerState.load_from_json(os.path.join(path, TRAINER_STATE))
        self.state = self._new_state(state)
        self.shaper.moments = RunningMoments(**(state.reward_moments or {}))
        checkpoint.load_rng_state(path, self.accelerator.process_index)

    # ----------------------------------------------------------------------------- saving

    def save_model(self, output_dir: str | None = None, merge_lora: bool = False) -> None:
        """Policy (or LoRA adapter, plus merged weights with `merge_lora`) + tokenizer in
        output_dir, the critic in output_dir/critic, the EMA actor in output_dir/ema and the trainer
        state (the PPO stage then writes the model card: `hub.finish_and_push`). Merging modifies the
        policy in place: call this last.

        A LoRA critic (`critic_use_peft`) is saved as its adapter plus its `score` head; reload it on
        the model it was trained on: `PeftModel.from_pretrained(AutoModelForSequenceClassification.
        from_pretrained(reward_model_path, num_labels=1), output_dir / "critic")`."""
        from ..artifacts.saving import save_model_and_tokenizer

        output_dir = output_dir or self.args.output_dir
        if self.fsdp:
            self._save_model_fsdp(output_dir, merge_lora)
            return
        # under ZeRO-3 every rank gathers the whole weights; the main rank writes them
        with engines.gathered_for_reading([self.unwrapped_actor, self.unwrapped_critic], self.zero_stage):
            if self.accelerator.is_main_process:
                self.unwrapped_critic.model.save_pretrained(os.path.join(output_dir, CRITIC_SUBDIR))
                self.processing_class.save_pretrained(os.path.join(output_dir, CRITIC_SUBDIR))
                if self.ema is not None:
                    self.ema.save_pretrained(os.path.join(output_dir, EMA_SUBDIR))
                    self.processing_class.save_pretrained(os.path.join(output_dir, EMA_SUBDIR))
                self.state.save_to_json(os.path.join(output_dir, TRAINER_STATE))
                save_model_and_tokenizer(self.unwrapped_actor, self.processing_class, output_dir, merge_lora)
        self.accelerator.wait_for_everyone()

    def _save_model_fsdp(self, output_dir: str, merge_lora: bool) -> None:
        """`save_model` under FSDP: every rank gathers the state dicts, the main rank writes them as
        `save_pretrained` would (a LoRA model: its adapter)."""
        if merge_lora:
            raise ConfigError("merge_lora is not available under FSDP (the actor's weights are sharded): save the "
                              "adapter and merge it on one device, or train with multi_gpu.yaml (DDP) or "
                              "single_gpu.yaml.")
        actor_state = fsdp.full_state_dict(self.actor)
        critic_state = fsdp.full_state_dict(self.critic)
        if self.accelerator.is_main_process:
            critic_dir = os.path.join(output_dir, CRITIC_SUBDIR)
            # the critic's keys are those of ValueModel, whose network is `model`
            self.unwrapped_critic.model.save_pretrained(
                critic_dir, state_dict={k.removeprefix("model."): v for k, v in critic_state.items()}
            )
            self.processing_class.save_pretrained(critic_dir)
            self.unwrapped_actor.save_pretrained(output_dir, state_dict=actor_state)
            self.processing_class.save_pretrained(output_dir)
            self.state.save_to_json(os.path.join(output_dir, TRAINER_STATE))
        self.accelerator.wait_for_everyone()

    def push_to_hub(self, commit_message: str = "End of training", revision: str | None = None):
        """Upload output_dir (checkpoints left out) to `hub_model_id` (default: output_dir's name)
        with `rlhf_recipes.artifacts.hub.push_to_hub`; only the main process uploads."""
        if not self.accelerator.is_main_process:
            return None
        args = self.args
        repo_id = args.hub_model_id or Path(args.output_dir).name
        return hub.push_to_hub(args.output_dir, repo_id, token=args.hub_token, private=args.hub_private_repo,
                               revision=revision, commit_message=commit_message)
