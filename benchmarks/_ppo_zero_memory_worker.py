"""One rank of benchmarks/ppo_zero_memory.py: PPO updates of a ~54M-parameter random-init Llama under whatever the
launcher set up (DDP through torchrun, DeepSpeed ZeRO-2/3/3-offload through `accelerate launch --config_file`).

    _ppo_zero_memory_worker.py OUT_DIR SPEC_JSON

Writes OUT_DIR/rank<r>.json with
- `held`: bytes of the tensors this rank really holds per model, each storage counted once: parameters (under
  ZeRO-3 the rank's shard `ds_tensor`, plus any gathered weight), gradients (module `.grad` and the optimizer's
  fp32 partitions' `.grad`), optimizer (Adam moments and, under ZeRO, its fp32 master partitions), other ZeRO
  buffers (flat buffers and anything else reachable from the ZeRO optimizer). A trained model is measured just
  before its optimizer's second step (Adam moments exist, gradients are reduced); frozen models at the same time.
- `rss`: VmRSS after imports and after setup, and peak RSS (VmHWM, reset with /proc/self/clear_refs) while
  generating and over the rest of the updates.
- `time`: seconds per update of the generation span (ZeRO-3: gathering the actor once, sampling, releasing),
  of `sample_responses` alone, of the rollout and of the whole step, from the trainer's log.
"""

import json
import os
import sys
import time
from contextlib import contextmanager

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "distributed"))
import cpu_deepspeed  # noqa: E402,F401  (torch AdamW under offload, gloo collectives: no DeepSpeed op compiled)

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig  # noqa: E402

from rlhf_recipes.models import ModelArguments, load_tokenizer  # noqa: E402
from rlhf_recipes.ppo import PPOConfig, PPOTrainer, engines, rollout  # noqa: E402


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # VmHWM := VmRSS


BASELINE_RSS = _status("VmRSS")
out_dir, spec = sys.argv[1], json.loads(sys.argv[2])


def _tensors(obj, seen_ids: set, depth: int = 0):
    """Tensors reachable from `obj` through containers and plain objects' attributes (not into nn.Modules)."""
    if id(obj) in seen_ids or depth > 6:
        return
    seen_ids.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
        if obj.is_leaf and obj.grad is not None:
            yield obj.grad
        if isinstance(getattr(obj, "ds_tensor", None), torch.Tensor):
            yield obj.ds_tensor
    elif isinstance(obj, torch.nn.Module):
        return
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value, seen_ids, depth + 1)
    elif isinstance(obj, list | tuple | set):
        for value in obj:
            yield from _tensors(value, seen_ids, depth + 1)
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("deepspeed", "torch"):
        yield from _tensors(vars(obj), seen_ids, depth + 1)


def _count(tensors, seen: set) -> int:
    total = 0
    for tensor in tensors:
        if tensor is None or tensor.device.type == "meta":
            continue
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if storage.nbytes() == 0 or key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def held_bytes(module: torch.nn.Module, zero_optimizer=None, torch_optimizer=None) -> dict:
    """Bytes this rank holds for one model, by category; each storage counted once, in this order."""
    seen: set = set()
    params = list(module.parameters())
    held = {"params": _count([t for p in params for t in (p.data, getattr(p, "ds_tensor", None))], seen),
            "numel": sum(getattr(p, "ds_numel", p.numel()) for p in params)}
    if torch_optimizer is None:
        return held
    masters = [p for group in torch_optimizer.param_groups for p in group["params"]]
    held["grads"] = _count([p.grad for p in params] + [p.grad for p in masters], seen)
    states = [t for state in torch_optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    held["optimizer"] = _count(states + masters, seen)
    held["zero_buffers"] = _count(_tensors(zero_optimizer, set()), seen) if zero_optimizer is not None else 0
    return held


def build_models(tokenizer):
    config = LlamaConfig(**spec["model"], pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, num_labels=1)
    torch.manual_seed(0)  # the same weights on every rank (under zero.Init each rank builds its shard)
    policy = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    return policy, reward


def prompts() -> Dataset:
    rows = []
    with open(os.path.join(os.path.dirname(HERE), "..", "shared", "data", "rm_static_style_sample.jsonl")) as handle:
        for line in handle:
            rows.append({"prompt": json.loads(line)["prompt"][-400:]})
            if len(rows) == 64:
                break
    return Dataset.from_list(rows)


class Probe:
    """Times the generation span and sampling, tracks peak RSS per phase, measures held bytes at the 2nd step."""

    def __init__(self):
        self.generation, self.sampling, self.held, self.steps = [], [], {}, {}
        self.peaks = {"generation": 0, "other": 0}

    @contextmanager
    def generation_span(self, *args, **kwargs):
        self.peaks["other"] = max(self.peaks["other"], _status("VmHWM"))
        _reset_peak()
        started = time.perf_counter()
        with WHOLE_WEIGHTS(*args, **kwargs):
            yield
        self.generation.append(time.perf_counter() - started)
        self.peaks["generation"] = max(self.peaks["generation"], _status("VmHWM"))
        _reset_peak()

    def timed_sampling(self, *args, **kwargs):
        started = time.perf_counter()
        result = SAMPLE(*args, **kwargs)
        self.sampling.append(time.perf_counter() - started)
        return result

    def before_step(self, trainer, name: str):
        def hook(optimizer, args, kwargs):
            self.steps[name] = self.steps.get(name, 0) + 1
            if self.steps[name] != 2:
                return
            wrapped = trainer.actor if name == "actor" else trainer.critic
            zero_optimizer = wrapped.optimizer if trainer.zero_stage else None
            self.held[name] = held_bytes(trainer._modules[name], zero_optimizer, optimizer)
            if name == "actor":
                for frozen in ("ref", "reward"):
                    module = trainer.ref_model if frozen == "ref" else trainer.scorer.reward_model
                    self.held[frozen] = held_bytes(module)

        return hook


WHOLE_WEIGHTS, SAMPLE = engines.whole_weights, rollout.sample_responses


def main() -> None:
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path="tiny:llama"))
    # use_cpu as the recipes parse it on a machine without CUDA; under a DeepSpeed launch the trainer still builds
    # the engines (its Accelerator gets cpu=False and the plugin)
    args = PPOConfig(output_dir=out_dir, use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no",
                     sample_every=0, seed=0, bf16=False, **spec["ppo"])
    policy, reward = build_models(tokenizer)
    trainer = PPOTrainer(args, tokenizer, policy, reward_model=reward, train_dataset=prompts())
    acc = trainer.accelerator
    assert acc.num_processes == 2, acc.num_processes
    probe = Probe()
    engines.whole_weights, rollout.sample_responses = probe.generation_span, probe.timed_sampling
    for name, prepared in (("actor", trainer.actor_optimizer), ("critic", trainer.critic_optimizer)):
        engines.stepped_optimizer(prepared).register_step_pre_hook(probe.before_step(trainer, name))
    setup_rss = _status("VmRSS")
    _reset_peak()
    trainer.train()
    probe.peaks["other"] = max(probe.peaks["other"], _status("VmHWM"))
    log = [json.loads(line) for line in open(os.path.join(out_dir, "ppo_log.jsonl"))] if acc.is_main_process else []
    record = {
        "rank": acc.process_index,
        "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type).split(".")[-1],
        "actor": type(trainer.actor).__name__,
        "zero_stage": trainer.zero_stage,
        "offload": str(trainer.actor.zero_offload_optimizer().device)
        if trainer.zero_stage and trainer.actor.zero_offload_optimizer() else None,
        "optimizer": type(engines.stepped_optimizer(trainer.actor_optimizer)).__name__,
        "held": probe.held,
        "rss": {"baseline": BASELINE_RSS, "after_setup": setup_rss, "peak_generation": probe.peaks["generation"],
                "peak_other": probe.peaks["other"]},
        "time": {"generation": probe.generation, "sampling": probe.sampling,
                 "rollout": [row["time/rollout"] for row in log], "step": [row["time/step"] for row in log]},
        "response_length": [row["objective/response_length"] for row in log],
    }
    with open(os.path.join(out_dir, f"rank{acc.process_index}.json"), "w") as handle:
        json.dump(record, handle)
    acc.end_training()


if __name__ == "__main__":
    main()
