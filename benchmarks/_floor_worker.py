"""The model work floor of one PPO update; started by `ppo_vs_trl.py` in the project venv.

Usage: _floor_worker.py SPEC_JSON OUT_JSON
Same workload, batch, response length, epochs and minibatches as the two trainer workers, with
no trainer around the models: per update it samples the responses with the KV cache
(`rlhf_recipes.ppo.sampling.sample`, which also gives the old logprobs), runs one reference
forward, one value forward and the reward over the rollout, then num_ppo_epochs x
num_mini_batches micro-steps: actor and critic forward + backward on a minibatch slice and one
fused `torch.optim.Adam` step over both. Every pass does the least arithmetic either trainer
needs: the LM head only on response positions, minibatches trimmed to their own padding. The
loss is a bare policy-gradient surrogate plus a squared value error (elementwise work on
B x R tensors, negligible next to the passes). Its rewards do not form a PPO curve and are not
reported; only time is.
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ppo_bench_common import load_workload, write_json  # noqa: E402

from rlhf_recipes.models.generation import SamplingConfig, position_ids_from, sample  # noqa: E402


def response_logprobs(policy, ids, mask, width: int, temperature: float) -> torch.Tensor:
    """Log softmax(logits / T) of each response token; the LM head runs on the last width + 1 positions."""
    logits = policy(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_from(mask), use_cache=False,
        logits_to_keep=width + 1,
    ).logits[:, :-1].float() / temperature
    return logits.log_softmax(-1).gather(-1, ids[:, -width:].unsqueeze(-1)).squeeze(-1)


def token_values(value, ids, mask, width: int) -> torch.Tensor:
    """The value head on the positions that predict each response token."""
    backbone = getattr(value, value.base_model_prefix)
    hidden = backbone(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_from(mask), use_cache=False
    ).last_hidden_state
    return value.score(hidden[:, -width - 1 : -1]).squeeze(-1)


def rollout(models, prompt_ids, prompt_mask, config: SamplingConfig) -> dict:
    """Responses and everything the PPO loss needs from them: old and reference logprobs, values, scores."""
    policy, ref, value, reward = models
    responses, logprobs = sample(policy, prompt_ids, prompt_mask, config)
    ids = torch.cat([prompt_ids, responses], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(responses)], dim=1)
    width = responses.shape[1]
    with torch.inference_mode():
        ref_logprobs = response_logprobs(ref, ids, mask, width, config.temperature)
        values = token_values(value, ids, mask, width)
        scores = reward(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    return {"ids": ids, "mask": mask, "logprobs": logprobs, "ref_logprobs": ref_logprobs, "values": values,
            "scores": scores}


def micro_step(models, optimizer, batch: dict, rows: torch.Tensor, spec: dict) -> None:
    """Actor + critic forward and backward on `rows` (common left padding cut off), then one Adam step."""
    policy, _, value, _ = models
    mask = batch["mask"][rows]
    first = int((mask.sum(0) > 0).nonzero()[0])
    ids, mask = batch["ids"][rows, first:], mask[:, first:]
    width, old = spec["response_length"], batch["logprobs"][rows]
    kl = old - batch["ref_logprobs"][rows]
    advantages = (batch["scores"][rows] - batch["scores"].mean()).unsqueeze(1) - spec["kl_coef"] * kl
    ratio = torch.exp(response_logprobs(policy, ids, mask, width, spec["temperature"]) - old)
    value_error = token_values(value, ids, mask, width) - batch["scores"][rows].unsqueeze(1)
    loss = -(ratio * advantages).mean() + 0.5 * value_error.square().mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    tokenizer, policy, ref, value, reward, prompts = load_workload(Path(spec["workdir"]))
    models = (policy, ref.eval(), value, reward)
    # fused, the kernel both trainers get from transformers' default optimizer (adamw_torch_fused)
    optimizer = torch.optim.Adam([*policy.parameters(), *value.parameters()], lr=spec["learning_rate"], fused=True)
    config = SamplingConfig(
        max_new_tokens=spec["response_length"], pad_token_id=tokenizer.pad_token_id, temperature=spec["temperature"]
    )
    batch_size = spec["batch_size"]
    minibatch = batch_size // spec["num_mini_batches"]
    walls, cpus, rollout_seconds = [time.perf_counter()], [time.process_time()], []
    for _ in range(spec["updates"]):
        # a random batch of prompts, as the trainers' shuffled loaders give; tokenized here like ours does
        picks = torch.randperm(len(prompts))[:batch_size].tolist()
        encoded = tokenizer([prompts[i]["prompt"] for i in picks], return_tensors="pt", padding=True)
        start = time.perf_counter()
        policy.eval()
        batch = rollout(models, encoded["input_ids"], encoded["attention_mask"], config)
        rollout_seconds.append(time.perf_counter() - start)
        policy.train()
        value.train()
        for _ in range(spec["num_ppo_epochs"]):
            order = torch.randperm(batch_size)
            for begin in range(0, batch_size, minibatch):
                micro_step(models, optimizer, batch, order[begin : begin + minibatch], spec)
        walls.append(time.perf_counter())
        cpus.append(time.process_time())
    write_json(
        Path(out_path),
        {
            "update_seconds": [b - a for a, b in zip(walls, walls[1:])],
            "update_cpu_seconds": [b - a for a, b in zip(cpus, cpus[1:])],
            "generate_seconds": [0.0] * spec["updates"],
            "rollout_seconds": rollout_seconds,
            "versions": {"torch": torch.__version__},
        },
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
