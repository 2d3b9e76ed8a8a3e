"""SmolLM2-135M-Instruct on HH-RLHF helpful, end to end on this CPU: does RLHF improve a real model, what does
it cost, and what does PPO-ptx pay back (issue 14, items 2, 5 and 6)?

    python benchmarks/smollm2_hh.py [--work_dir runs/smollm2_hh] [--stages sft reward eval_rm ppo ppo_ptx evaluate]
        [--ptx_coef 1.0] [--rm_eval_max_length N] [--num_eval_prompts 32] [--num_lm_texts 32]
        [--eval_policies base sft ppo ppo_ptx] [--results_name smollm2_hh]

Each stage runs as a user runs it (`rlhf-recipes <stage> --config recipes/smollm2-135m/<stage>.yaml`, the output
directory moved under --work_dir), in its own process, timed: wall, CPU (user + system of that process),
peak RSS, the load average before and after, and the trainer's own runtime per optimizer step. A stage already
recorded in <work_dir>/stages.json is not run again, so the stages can be run one invocation at a time.

- `eval_rm`: the reward model's pair accuracy on the 400 held-out pairs of hh_rlhf_helpful_base_test_sample.jsonl,
  with a Wilson 95% interval, and the accuracy of "the longer answer wins" on all 400 pairs for comparison.
- `ppo_ptx`: the same PPO run with `--ptx_coef` and the SFT demonstrations as ptx texts (equal PPO budget).
- `evaluate` (in this process): on held-out prompts of the test sample, each policy (SFT, PPO, PPO-ptx) samples at
  the PPO temperature; the reward model's mean score, the score PPO optimises (minus missing_eos_penalty for an
  answer without <|im_end|>), KL to the SFT policy (mean log-ratio of the tempered policies on the policy's own
  samples: the quantity PPO's penalty bounds), length in tokens and the rate of answers that end with <|im_end|>;
  held-out language-model loss (mean NLL per token) of the base model, SFT, PPO and PPO-ptx on test-sample
  conversations, as chat text and as the raw "Human: ... Assistant: ..." transcript (pretraining-style text):
  the alignment tax; greedy answers of the base model, SFT, PPO and PPO-ptx to fixed probe prompts.

Results: benchmarks/results/smollm2_hh.json and .md, or <--results_name>.json and .md (with the command lines
and the CPU model).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from _machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
RECIPES = REPO / "recipes" / "smollm2-135m"
TEST = REPO.parent / "shared" / "data" / "hh_rlhf_helpful_base_test_sample.jsonl"
POOL = REPO.parent / "shared" / "data" / "hh_rlhf_helpful_train_pool.jsonl"
BASE = "smollm2-135m-instruct"
STAGES = ("sft", "reward", "eval_rm", "ppo", "ppo_ptx", "evaluate")
POLICIES = ("base", "sft", "ppo", "ppo_ptx")
PROBES = (
    "How does a telescope work?",
    "Why do birds migrate south for the winter?",
    "What should I do if I can't fall asleep at night?",
    "天空为什么是蓝色的？",
    "请给我三条保持健康的建议。",
)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for z = 1.96)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def timed(argv: list[str]) -> dict:
    """Run `argv` in its own process: wall and CPU seconds, peak RSS and the load average around it."""
    load_before, start = os.getloadavg(), time.time()
    process = subprocess.Popen(argv, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    record = {
        "command": " ".join(argv[argv.index("rlhf-recipes"):] if "rlhf-recipes" in argv else argv),
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_s": round(time.time() - start, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1e6, 2),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    if record["exit_code"]:
        raise SystemExit(f"{record['command']} failed with exit code {record['exit_code']}")
    return record


def trainer_runtime(output_dir: Path) -> dict:
    """The trainer's own train_runtime per optimizer step (model loading and saving excluded)."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    runtime = next((row["train_runtime"] for row in state["log_history"] if "train_runtime" in row), None)
    steps = state["global_step"]
    return {"steps": steps, "train_runtime_s": runtime, "s_per_step": round(runtime / steps, 1) if runtime else None}


def stage_argv(name: str, work: Path, ptx_coef: float, rm_eval_max_length: int | None) -> list[str]:
    cli = [str(Path(sys.executable).with_name("rlhf-recipes"))]
    if name == "sft":
        return [*cli, "sft", "--config", str(RECIPES / "sft.yaml"), "--output_dir", str(work / "sft")]
    if name == "reward":
        return [*cli, "reward", "--config", str(RECIPES / "reward.yaml"), "--output_dir", str(work / "reward")]
    if name == "eval_rm":
        cap = ["--max_length", str(rm_eval_max_length)] if rm_eval_max_length else []
        return [*cli, "eval-rm", "--model_name_or_path", str(work / "reward" / "merged"), "--dataset", str(TEST),
                "--batch_size", "1", *cap, "--json", str(work / "eval_rm_test.json")]
    ppo = [*cli, "ppo", "--config", str(RECIPES / "ppo.yaml"), "--sft_model_path", str(work / "sft" / "merged"),
           "--reward_model_path", str(work / "reward" / "merged")]
    if name == "ppo":
        return [*ppo, "--output_dir", str(work / "ppo")]
    return [*ppo, "--output_dir", str(work / "ppo_ptx"), "--ptx_coef", str(ptx_coef), "--ptx_dataset_name", str(POOL)]


def reward_accuracy(work: Path) -> dict:
    """Held-out pair accuracy with its Wilson interval, beside the length heuristic on the same pairs."""
    from transformers import AutoTokenizer

    report = json.loads((work / "eval_rm_test.json").read_text())
    pairs = report["pairs"]
    n, correct = len(pairs), sum(pair["chosen_score"] > pair["rejected_score"] for pair in pairs)
    tokenizer = AutoTokenizer.from_pretrained(work / "reward" / "merged")
    rows = [json.loads(line) for line in TEST.read_text().splitlines()]
    lengths = [(len(tokenizer(r["chosen"]).input_ids), len(tokenizer(r["rejected"]).input_ids)) for r in rows]
    longer_wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in lengths)
    low, high = wilson_interval(correct, n)
    return {"num_pairs": n, "num_skipped": report.get("num_skipped_too_long", 0), "accuracy": correct / n,
            "wilson95": [low, high], "longer_answer_wins_accuracy": longer_wins / len(rows)}


class Tempered:
    """A causal LM whose logits are divided by the sampling temperature, so log-probabilities are the policy's."""

    def __init__(self, model, temperature: float):
        self.model, self.temperature = model, temperature

    def eval(self):
        self.model.eval()
        return self

    def __call__(self, **inputs):
        output = self.model(**inputs)
        output.logits = output.logits / self.temperature
        return output


def lm_loss(model, tokenizer, texts: list[str], max_length: int = 256) -> float:
    """Mean negative log-likelihood per token of `texts` (each cut to `max_length` tokens)."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length).input_ids
            loss = model(input_ids=ids, labels=ids).loss
            total, count = total + loss.item() * (ids.shape[1] - 1), count + ids.shape[1] - 1
    return total / count


def evaluate(work: Path, num_prompts: int, num_texts: int, only: list[str] | None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from rlhf_recipes.data import DataArguments, load_stage_dataset
    from rlhf_recipes.models.gguf import resolve_model_path
    from rlhf_recipes.models.measure import generate_responses, reward_scores, sequence_logprobs
    from rlhf_recipes.pipeline.evaluation import load_prompts

    ppo_cfg = yaml.safe_load((RECIPES / "ppo.yaml").read_text())
    temperature, response_length = ppo_cfg["temperature"], ppo_cfg["response_length"]
    max_prompt, penalty = ppo_cfg["max_prompt_length"], ppo_cfg["missing_eos_penalty"]
    tokenizer = AutoTokenizer.from_pretrained(work / "sft" / "merged")
    eos = tokenizer.eos_token_id
    prompts = load_prompts(str(TEST), num_prompts)
    conversations = load_stage_dataset(DataArguments(dataset_name=str(TEST), data_split="1,0,0", eval_split_size=0),
                                       "sft")["train"].select(range(num_texts))
    chat_texts = [tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
                  for row in conversations]
    raw_texts = [json.loads(line)["chosen"].strip() for line in TEST.read_text().splitlines()[-num_texts:]]
    rm = AutoModelForSequenceClassification.from_pretrained(work / "reward" / "merged", dtype=torch.float32).eval()

    def load(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    # A LoRA stage with merge_lora saves its adapter in output_dir and the merged model in output_dir/merged.
    policies = {"base": resolve_model_path(BASE), "sft": work / "sft" / "merged", "ppo": work / "ppo" / "merged",
                "ppo_ptx": work / "ppo_ptx" / "merged"}
    policies = {name: path for name, path in policies.items()
                if Path(path).joinpath("config.json").exists() and (not only or name in only)}
    sft = load(work / "sft" / "merged")
    rows, probes = {}, {}
    for name, path in policies.items():
        start, cpu = time.time(), time.process_time()
        model = sft if name == "sft" else load(path)
        row = {"lm_loss_chat": lm_loss(model, tokenizer, chat_texts),
               "lm_loss_raw": lm_loss(model, tokenizer, raw_texts)}
        if name != "base":
            responses = generate_responses(model, tokenizer, prompts, do_sample=True, temperature=temperature,
                                           max_new_tokens=response_length, seed=0, batch_size=8,
                                           max_prompt_length=max_prompt)
            scores = reward_scores(rm, tokenizer, prompts, responses, batch_size=8, max_prompt_length=max_prompt)
            ended = torch.tensor([float(bool(r) and r[-1] == eos) for r in responses])
            own = sequence_logprobs(Tempered(model, temperature), tokenizer, prompts, responses, 8, max_prompt)
            ref = sequence_logprobs(Tempered(sft, temperature), tokenizer, prompts, responses, 8, max_prompt)
            row.update({
                "rm_score": scores.mean().item(), "rm_score_sem": (scores.std() / len(scores) ** 0.5).item(),
                "rm_scores": [round(x, 4) for x in scores.tolist()],
                "ppo_objective": (scores - penalty * (1 - ended)).mean().item(),
                "kl_to_sft": (own - ref).mean().item(), "eos_rate": ended.mean().item(),
                "length_tokens": sum(map(len, responses)) / len(responses),
            })
        answers = generate_responses(model, tokenizer, [[{"role": "user", "content": p}] for p in PROBES],
                                     do_sample=False, max_new_tokens=128, batch_size=len(PROBES))
        probes[name] = [tokenizer.decode(a, skip_special_tokens=True).strip() for a in answers]
        row.update({"wall_s": round(time.time() - start, 1), "cpu_s": round(time.process_time() - cpu, 1)})
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    return {"num_prompts": len(prompts), "num_lm_texts": num_texts, "temperature": temperature,
            "response_length": response_length, "policies": rows, "probes": {"prompts": list(PROBES), **probes}}


def markdown(result: dict) -> str:
    lines = ["# SmolLM2-135M-Instruct on HH-RLHF helpful, end to end on a CPU", "",
             f"CPU: {result['cpu']} ({os.cpu_count()} cores). Made by these invocations, in this order (a stage "
             "recorded in stages.json is not run again; independent stages ran in parallel invocations):", "",
             *[f"- `{c}`" for c in result.get("commands", [])], "",
             *[line for note in result.get("notes", []) for line in (f"Note: {note}", "")],
             "| stage | command | wall s | CPU s | peak RSS GB | load avg (1 min) before/after "
             "| trainer s/step (steps) |",
             "|---|---|---|---|---|---|---|"]
    superseded = {f"{name} (superseded)": rec for name, rec in result.get("superseded", {}).items()
                  if not name.startswith("evaluation_")}
    for name, rec in {**result["stages"], **superseded}.items():
        trainer = rec.get("trainer", {})
        per_step = f"{trainer['s_per_step']} ({trainer['steps']})" if trainer.get("s_per_step") else ""
        lines.append(f"| {name} | `{rec['command']}` | {rec['wall_s']} | {rec['cpu_s']} | {rec['peak_rss_gb']} | "
                     f"{rec['load_before'][0]} / {rec['load_after'][0]} | {per_step} |")
    if "reward_accuracy" in result:
        acc = result["reward_accuracy"]
        lines += ["", f"Reward model, held-out pairs: accuracy {acc['accuracy']:.1%} of {acc['num_pairs']} "
                  f"(Wilson 95% {acc['wilson95'][0]:.1%}-{acc['wilson95'][1]:.1%}; {acc['num_skipped']} skipped); "
                  f"'the longer answer wins' on all 400 pairs: {acc['longer_answer_wins_accuracy']:.1%}."]
    evaluation = result.get("evaluation")
    if evaluation:
        keys = ("rm_score", "ppo_objective", "kl_to_sft", "length_tokens", "eos_rate", "lm_loss_chat", "lm_loss_raw")
        lines += ["", f"Held-out: {evaluation['num_prompts']} test-sample prompts sampled at T="
                  f"{evaluation['temperature']} (up to {evaluation['response_length']} tokens); LM loss on "
                  f"{evaluation['num_lm_texts']} test-sample conversations (chat text / raw transcript).", "",
                  "| policy | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        policies = {name: evaluation["policies"][name] for name in POLICIES if name in evaluation["policies"]}
        # Earlier runs of a stage, kept under "superseded" with their evaluation (e.g. a shorter PPO budget).
        policies |= {name.removeprefix("evaluation_") + " (superseded)": row
                     for name, row in result.get("superseded", {}).items() if name.startswith("evaluation_")}
        for name, row in policies.items():
            cells = [f"{row[k]:.3f}" if k in row else "" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for name in [p for p in policies if p not in ("base", "sft")]:
            if "rm_scores" in policies[name] and "rm_scores" in policies.get("sft", {}):
                diff = [x - y for x, y in zip(policies[name]["rm_scores"], policies["sft"]["rm_scores"], strict=True)]
                mean = sum(diff) / len(diff)
                sem = (sum((d - mean) ** 2 for d in diff) / (len(diff) - 1) / len(diff)) ** 0.5
                lines.append(f"\n{name} - sft, RM score on the same prompts: {mean:+.3f} (paired SEM {sem:.3f}, "
                             f"n {len(diff)}; {sum(d > 0 for d in diff)} of {len(diff)} prompts higher).")
        probes = evaluation["probes"]
        models = [m for m in POLICIES if m in probes]
        lines += ["", "Probe prompts, greedy, up to 128 tokens:", "", "| prompt | " + " | ".join(models) + " |",
                  "|---" * (len(models) + 1) + "|"]
        for i, prompt in enumerate(probes["prompts"]):
            cells = [probes[m][i].replace("\n", " ").replace("|", "\\|") for m in models]
            lines.append(f"| {prompt} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="runs/smollm2_hh")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--ptx_coef", type=float, default=1.0)
    parser.add_argument("--rm_eval_max_length", type=int, default=None,
                        help="eval-rm skips (and counts) held-out pairs longer than this; default: score all 400.")
    parser.add_argument("--num_eval_prompts", type=int, default=32)
    parser.add_argument("--num_lm_texts", type=int, default=32)
    parser.add_argument("--eval_policies", nargs="+", choices=POLICIES, default=None,
                        help="evaluate only these policies, merged into earlier results (to run them in parallel).")
    parser.add_argument("--results_name", default="smollm2_hh",
                        help="benchmarks/results/<name>.json and .md (a replication keeps the first run's files)")
    args = parser.parse_args()
    work = (REPO / args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "stages.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"stages": {}}
    command = (f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} python benchmarks/smollm2_hh.py "
               + " ".join(sys.argv[1:]))
    state["cpu"] = cpu_model()
    for name in args.stages:
        if name in state["stages"] or (name == "evaluate"):
            continue
        record = timed(stage_argv(name, work, args.ptx_coef, args.rm_eval_max_length))
        if name in ("sft", "reward", "ppo", "ppo_ptx"):
            record["trainer"] = trainer_runtime(work / name)
        # Re-read: independent stages (sft and reward, ppo and ppo_ptx) may run in parallel invocations.
        if state_path.exists():
            state.update({k: v for k, v in json.loads(state_path.read_text()).items() if k != "cpu"})
        state["stages"][name] = record
        if name == "eval_rm":
            state["reward_accuracy"] = reward_accuracy(work)
        state_path.write_text(json.dumps(state, indent=1, ensure_ascii=False))
    if "evaluate" in args.stages:
        start, cpu = time.time(), time.process_time()
        result = evaluate(work, args.num_eval_prompts, args.num_lm_texts, args.eval_policies)
        if state_path.exists():
            state.update({k: v for k, v in json.loads(state_path.read_text()).items() if k != "cpu"})
        earlier = state.get("evaluation", {}) if args.eval_policies else {}
        result["policies"] = {**earlier.get("policies", {}), **result["policies"]}
        result["probes"] = {**earlier.get("probes", {}), **result["probes"]}
        result["cpu_s_by_run"] = {**earlier.get("cpu_s_by_run", {}),
                                  " ".join(args.eval_policies or ["all"]): round(time.process_time() - cpu, 1)}
        result["wall_s_by_run"] = {**earlier.get("wall_s_by_run", {}),
                                   " ".join(args.eval_policies or ["all"]): round(time.time() - start, 1)}
        state["evaluation"] = result
        state_path.write_text(json.dumps(state, indent=1, ensure_ascii=False))
    if state_path.exists():
        state.update({k: v for k, v in json.loads(state_path.read_text()).items() if k != "cpu"})
    state["commands"] = [*state.get("commands", []), command]
    state_path.write_text(json.dumps(state, indent=1, ensure_ascii=False))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results_name}.json").write_text(json.dumps(state, indent=1, ensure_ascii=False))
    (RESULTS / f"{args.results_name}.md").write_text(markdown(state))
    print(markdown(state))


if __name__ == "__main__":
    main()
