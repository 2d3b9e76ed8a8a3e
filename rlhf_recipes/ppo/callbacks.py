"""PPO callbacks: transformers' `TrainerCallback` plus two events the PPO loop raises.

- `on_rollout_end(args, state, control, rollout_stats, **kwargs)`: after each rollout's
  logprobs and scores, before the KL penalty is added to the rewards. `rollout_stats` holds
  `kl` (mean over all ranks' responses of the summed per-token KL estimate), `scores` (mean
  shaped score) and `num_samples` (responses in the rollout, all ranks). A callback may set
  `state.kl_coef`: the value there when the event returns is the coefficient of this rollout's
  per-token penalty `-kl_coef * kl_t`. `state.kl_coef` is the coefficient's only home: the KL
  callback sets it from `args.kl_coef` when training begins, and checkpoints keep it.
- `compute_extra_actor_loss(args, state, control, model, micro_step, num_micro_steps,
  process_index, num_processes, **kwargs)`: once per actor microbatch of the configured size
  (`gradient_accumulation_steps` per minibatch, also where the trainer packs their rows into fewer passes).
  Return None or a dict `{name: (coef, loss)}`; the trainer adds `coef * loss` to the actor
  loss (skipped when coef is 0), backpropagates it with the PPO loss (or, for a microbatch packed
  with others, just before their pass), and logs the mean of `loss` as `loss/<name>`. `model` is
  the unwrapped actor: its gradients still reach DDP's all-reduce, which reduces everything
  accumulated up to the minibatch's last backward through the wrapper. `micro_step` counts those
  microbatches in this update (each of 0 .. num_micro_steps - 1 once).

Every rank must run the same collectives in these events (or none).
"""

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import CallbackHandler

from .losses import ptx_loss


class PPOCallback(TrainerCallback):
    """Base class for callbacks that use the PPO events (see the module docstring)."""

    def on_rollout_end(self, args, state, control, rollout_stats: dict, **kwargs):
        pass

    def compute_extra_actor_loss(self, args, state, control, model, micro_step: int, num_micro_steps: int, **kwargs):
        return None


class PPOCallbackHandler(CallbackHandler):
    """`CallbackHandler` that also dispatches the PPO events; plain `TrainerCallback`s skip them."""

    def _ppo_callbacks(self):
        return [cb for cb in self.callbacks if isinstance(cb, PPOCallback)]

    def on_rollout_end(self, args, state, control, rollout_stats: dict):
        for callback in self._ppo_callbacks():
            result = callback.on_rollout_end(args, state, control, rollout_stats=rollout_stats, **self._kwargs())
            control = result if result is not None else control
        return control

    def compute_extra_actor_loss(self, args, state, control, model, **event) -> dict:
        """Merged `{name: (coef, loss)}` of all PPO callbacks; `event` holds micro_step,
        num_micro_steps, process_index and num_processes."""
        terms = {}
        for callback in self._ppo_callbacks():
            extra = callback.compute_extra_actor_loss(
                args, state, control, model=model, processing_class=self.processing_class, **event
            )
            for name, term in (extra or {}).items():
                if name in terms:
                    raise ValueError(f"Two callbacks return an extra actor loss named {name!r}.")
                terms[name] = term
        return terms

    def _kwargs(self) -> dict:
        return {"model": self.model, "processing_class": self.processing_class, "optimizer": self.optimizer}


class KLCallback(PPOCallback):
    """Base of the KL controllers; the trainer adds one (fixed or adaptive) unless you pass one.
    Training starts with `state.kl_coef = args.kl_coef`; a resumed run keeps the checkpoint's value."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            state.kl_coef = args.kl_coef


class FixedKLCallback(KLCallback):
    """kl_coef stays at `args.kl_coef` (TRL PPOv2, DeepSpeed-Chat), also when a run resumes with
    another value. Other callbacks may still set `state.kl_coef` (a schedule)."""

    def on_train_begin(self, args, state, control, **kwargs):
        state.kl_coef = args.kl_coef


class AdaptiveKLCallback(KLCallback):
    """Ziegler et al. (2019) proportional controller, as in TRL <= 0.11:

    e = clip(KL / target - 1, -0.2, 0.2);   kl_coef <- kl_coef * (1 + e * n / horizon)
    with KL the measured per-response KL and n the responses in the rollout. The coefficient
    starts at the config's `kl_coef`, or a checkpoint's value (see `KLCallback`).
    """

    def __init__(self, target: float, horizon: int):
        self.target, self.horizon = target, horizon

    def on_rollout_end(self, args, state, control, rollout_stats, **kwargs):
        error = min(max(rollout_stats["kl"] / self.target - 1.0, -0.2), 0.2)
        state.kl_coef = state.kl_coef * (1.0 + error * rollout_stats["num_samples"] / self.horizon)


class PtxCallback(PPOCallback):
    """PPO-ptx (InstructGPT): adds `ptx_coef * L_ptx` to the actor loss, L_ptx the LM loss on a
    batch of pretraining/SFT texts (`losses.ptx_loss`), one batch per actor microbatch.

    `ptx_dataset` has a `text` column, or `messages`, or `prompt` + `completion` (TRL's SFT
    formats; chat messages go through the tokenizer's chat template). Batches follow a fixed
    order derived from `args.seed`, the global step and the microbatch, so runs resume with the
    same batches and ranks read disjoint rows. The LM loss is computed and logged even at
    `ptx_coef=0` (a forgetting monitor); nothing is then added and the update is identical to
    one without ptx.
    """

    def __init__(self, ptx_dataset, ptx_coef: float, batch_size: int | None = None, max_length: int | None = None):
        self.dataset, self.ptx_coef = ptx_dataset, ptx_coef
        self.batch_size, self.max_length = batch_size, max_length
        self._ids = None

    def _texts(self, tokenizer) -> list[str]:
        columns = self.dataset.column_names
        if "text" in columns:
            return list(self.dataset["text"])
        if "messages" in columns:
            return [tokenizer.apply_chat_template(m, tokenize=False) for m in self.dataset["messages"]]
        if {"prompt", "completion"} <= set(columns):
            pairs = zip(self.dataset["prompt"], self.dataset["completion"], strict=True)
            return [
                tokenizer.apply_chat_template(p + c, tokenize=False) if isinstance(p, list) else p + c for p, c in pairs
            ]
        raise ValueError(
            f"The ptx dataset needs a 'text', 'messages' or 'prompt'+'completion' column; it has {columns}."
        )

    def on_train_begin(self, args, state, control, processing_class=None, **kwargs):
        max_length = self.max_length or args.max_prompt_length + args.response_length
        encoded = processing_class(self._texts(processing_class), truncation=True, max_length=max_length)
        self._ids = [ids for ids in encoded["input_ids"] if len(ids) > 1]
        if not self._ids:
            raise ValueError("The ptx dataset has no text of two or more tokens.")
        self._order = torch.randperm(len(self._ids), generator=torch.Generator().manual_seed(args.seed))

    def _batch(self, args, state, event, pad_token_id, device):
        batch_size = self.batch_size or args.micro_batch_size
        call = state.global_step * event["num_micro_steps"] + event["micro_step"]
        start = (call * event["num_processes"] + event["process_index"]) * batch_size
        rows = [self._ids[self._order[(start + i) % len(self._ids)]] for i in range(batch_size)]
        width = max(len(r) for r in rows)
        ids = torch.full((batch_size, width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        return ids.to(device), mask.to(device)

    def compute_extra_actor_loss(self, args, state, control, model, processing_class=None, **event):
        device = next(model.parameters()).device
        ids, mask = self._batch(args, state, event, processing_class.pad_token_id, device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return {"ptx": (self.ptx_coef, ptx_loss(logits.float(), ids, mask))}
