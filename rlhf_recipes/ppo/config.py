"""`PPOConfig`: TRL's former PPOConfig fields (0.12-1.11) on `transformers.TrainingArguments`,
plus what DeepSpeed-Chat step 3 and OpenRLHF add (reward clipping, ptx, EMA, adaptive KL).

Batch vocabulary (one "step" = one PPO update = one rollout batch):
- `per_device_train_batch_size` prompts per rank are rolled out per step (the rollout batch);
- each rank splits its rollout into `num_mini_batches` minibatches, one optimizer step each,
  repeated for `num_ppo_epochs` epochs;
- a minibatch is processed in `gradient_accumulation_steps` microbatches, or (one process, DDP) fewer, its rows
  packed by length into the positions that many untrimmed microbatches would compute (`ppo.microbatches`).
This differs from TRL, where `per_device_train_batch_size` was the microbatch and the rollout
was `per_device_train_batch_size * gradient_accumulation_steps`.
"""

import os
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..config.parsing import ConfigError
from ..config.ranges import check_ranges
from ..config.preflight import check_length

KL_ESTIMATORS = ("k1", "k3")


@dataclass
class PPOConfig(TrainingArguments):
    """PPO (InstructGPT step 3) settings. Each help text names the origin of its default."""

    # TrainingArguments defaults changed for PPO.
    learning_rate: float = field(
        default=3e-6, metadata={"help": "Actor learning rate (TRL PPOv2 3e-6; DeepSpeed-Chat 9.65e-6)."}
    )
    logging_steps: float = field(
        default=1, metadata={"help": "Report to report_to integrations every N updates (ppo_log.jsonl gets every one)."}
    )

    # Models.
    sft_model_path: str | None = field(
        default=None, metadata={"help": "Policy to start from (step 1 output); defaults to model_name_or_path."}
    )
    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model (step 2 output); may be unset when reward functions score."}
    )
    value_model_path: str | None = field(
        default=None, metadata={"help": "Critic initialisation; defaults to the reward model (DeepSpeed-Chat)."}
    )
    ref_model_path: str | None = field(
        default=None,
        metadata={
            "help": "Reference policy; defaults to a frozen copy of the policy, or with LoRA the disabled adapter."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub models with custom code."})
    disable_dropout: bool = field(
        default=True, metadata={"help": "Turn dropout off in every model (TRL; DeepSpeed-Chat sets dropout 0)."}
    )

    # Rollout.
    total_episodes: int | None = field(
        default=None,
        metadata={"help": "Prompts to roll out in total (TRL); else max_steps, else num_train_epochs x dataset."},
    )
    max_prompt_length: int = field(
        default=256,
        metadata={"help": "Prompts keep their last N tokens (DeepSpeed-Chat: 256, truncated from the left)."},
    )
    response_length: int = field(default=53, metadata={"help": "Maximum new tokens per response (TRL 53)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (TRL 0.7)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 disables (TRL)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling; 1.0 disables (TRL)."})
    stop_token: str | None = field(
        default="eos",
        metadata={
            "help": "'eos' = the tokenizer's EOS, another string = that token, null = none. Responses end at the "
            "first stop token (TRL's default was null; we stop at EOS as InstructGPT did)."
        },
    )
    stop_token_id: int | None = field(default=None, metadata={"help": "Stop token id, instead of stop_token (TRL)."})
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Rows per no-grad generation/forward chunk in the rollout (TRL 64)."}
    )

    # Reward.
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of responses without a stop token (TRL)."}
    )
    reward_clip: float | None = field(
        default=5.0,
        metadata={"help": "Scores clipped to [-c, c] (DeepSpeed-Chat 5; OpenRLHF 10); null disables."},
    )
    normalize_reward: bool = field(
        default=False, metadata={"help": "Normalise scores by running mean/std over all rollouts (OpenRLHF)."}
    )
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten per-token rewards before GAE (TRL)."})

    # KL control.
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "KL penalty coefficient, initial value if adaptive (TRL PPOv2 0.05; DS-Chat 0.1)."},
    )
    kl_estimator: str = field(
        default="k1",
        metadata={"help": "Per-token KL estimator, k1 (log ratio) or k3 (TRL; joschu.net/blog/kl-approx)."},
    )
    adaptive_kl: bool = field(default=False, metadata={"help": "Ziegler et al. adaptive KL controller (old TRL)."})
    target_kl: float = field(default=6.0, metadata={"help": "Target KL per response for adaptive_kl (old TRL 6)."})
    kl_horizon: int = field(default=10000, metadata={"help": "Horizon of the adaptive KL controller (old TRL 10000)."})

    # PPO update.
    num_ppo_epochs: int = field(default=4, metadata={"help": "Epochs over each rollout (TRL 4; DeepSpeed-Chat 1)."})
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches per rollout and epoch (TRL 1)."})
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip (TRL, DeepSpeed-Chat 0.2)."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip (TRL, DeepSpeed-Chat 0.2)."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss weight (TRL 0.1)."})
    gamma: float = field(default=1.0, metadata={"help": "Discount (TRL, DeepSpeed-Chat 1.0)."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (TRL, DeepSpeed-Chat 0.95)."})
    critic_use_peft: bool = field(
        default=False,
        metadata={
            "help": "Train the critic as a LoRA adapter with the same lora_* settings as the policy, its scalar head "
            "`score` trained in full. Without value_model_path the critic is the reward model itself with the "
            "adapter, scoring runs with the adapter disabled: one copy of the RM weights (LLaMA-Factory)."
        },
    )
    critic_learning_rate: float | None = field(
        default=None, metadata={"help": "Critic learning rate; defaults to learning_rate (DeepSpeed-Chat 5e-6)."}
    )
    ptx_coef: float = field(
        default=0.0,
        metadata={"help": "Weight of the pretraining LM loss, PPO-ptx (InstructGPT gamma; DeepSpeed-Chat 27.8)."},
    )
    ema: bool = field(default=False, metadata={"help": "Keep an EMA copy of the actor (DeepSpeed-Chat --enable_ema)."})
    ema_decay: float = field(default=0.992, metadata={"help": "EMA decay (DeepSpeed-Chat, OpenRLHF 0.992)."})

    # Monitoring and robustness.
    sample_every: int = field(
        default=10, metadata={"help": "Log a table of sample completions every N updates; 0 disables."}
    )
    num_sample_completions: int = field(default=4, metadata={"help": "Rows of each sample table."})
    max_nonfinite_steps: int = field(
        default=5, metadata={"help": "Stop with an error after this many non-finite updates in a row."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    @property
    def mini_batch_size(self) -> int:
        """Rollout rows per rank in one minibatch (one optimizer step)."""
        return self.per_device_train_batch_size // self.num_mini_batches

    @property
    def micro_batch_size(self) -> int:
        """Rows per rank in one forward/backward pass, untrimmed (packing may put more, shorter rows in one)."""
        return self.mini_batch_size // self.gradient_accumulation_steps

    def validate(self) -> None:
        """Raise `ConfigError` for settings that cannot run; needs no model. Each field's own range is in
        `config.ranges` (shared with the command line's precheck); here the rules between fields and PPO's own."""
        check_ranges(vars(self))
        checks = [
            (
                self.kl_estimator in KL_ESTIMATORS,
                f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}.",
            ),
            (
                self.per_device_train_batch_size % self.num_mini_batches == 0,
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be divisible by "
                f"num_mini_batches ({self.num_mini_batches}): each rank splits its rollout into equal minibatches.",
            ),
            (
                self.mini_batch_size % self.gradient_accumulation_steps == 0,
                f"Each minibatch ({self.per_device_train_batch_size} / {self.num_mini_batches} rows per rank) must be "
                f"divisible by gradient_accumulation_steps ({self.gradient_accumulation_steps}).",
            ),
            (self.temperature > 0, f"temperature must be positive (PPO samples its rollouts), got {self.temperature}."),
            (not (self.stop_token and self.stop_token_id is not None), "Set stop_token or stop_token_id, not both."),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.check_launch()

    @property
    def fsdp_launch(self) -> bool:
        """Launched with FSDP: an FSDP launch config (`accelerate launch` sets ACCELERATE_USE_FSDP) or the
        `fsdp` field."""
        return bool(self.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("true", "1")

    def check_launch(self) -> None:
        """PPO runs on one device, with DDP, under DeepSpeed ZeRO-2/3 or under FSDP2
        (docs/distributed_ppo.md). FSDP1 is refused: its flat parameters cannot be gathered around a
        generation loop."""
        if not self.fsdp_launch:
            return
        if self.fsdp:
            version = int((self.fsdp_config or {}).get("version", 2))  # TrainingArguments' default
        else:
            version = int(os.environ.get("FSDP_VERSION", "1"))  # accelerate's default
        if version != 2:
            raise ConfigError(
                f"PPO under FSDP needs FSDP2 (fsdp_version: 2, torch's fully_shard), got version {version}. Set "
                "fsdp_version: 2 in the launch config (accelerate_configs/fsdp.yaml does), or launch with "
                "accelerate_configs/deepspeed_zero3.yaml."
            )

    def check_model_positions(self, max_positions: int | None) -> None:
        """Prompt plus response must fit the model's position embeddings."""
        check_length(max_positions, max_prompt_length=self.max_prompt_length, response_length=self.response_length)
