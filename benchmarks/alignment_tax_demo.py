"""The demo's alignment tax: what PPO costs its language model on pretraining-style text, and what PPO-ptx pays back
(issue 14, item 6; InstructGPT's reason for PPO-ptx).

    python benchmarks/alignment_tax_demo.py [--seeds 0 1] [--ptx_coefs 0 0.5 2] [--work_dir runs/alignment_tax_demo]
        [--append]

Per seed the demo pipeline (`rlhf_recipes.demo.run.DEMO_PIPELINE`) runs once with the first ptx_coef; for each
further ptx_coef only PPO and the evaluation rerun in the same run directory (the pipeline skips the finished
data, pretrain, SFT, reward and selection steps, whose settings did not change), so every PPO run starts from the
same SFT model and reward model with the same budget (the demo's 60 updates of 64 rollouts).

Per ptx_coef: the held-out gold metrics of SFT and PPO (the pipeline's evaluation.json), KL to SFT, and the
held-out language-model loss (mean NLL per token) of the stage-0 model, SFT and PPO on pretraining-style text:
`--num_texts` corpus questions drawn like the stage-0 corpus (first/last/min of four digits, never `max`) with a
seed the corpus did not use, minus any text the corpus contains. Results: benchmarks/results/alignment_tax_demo.json
and .md, with the command, the CPU model and the wall and CPU time of each run.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
GOLD = ("greedy_accuracy", "sampled_accuracy", "sampled_repetition", "kl_to_sft")


def heldout_corpus(run_dir: Path, seed: int, count: int) -> list[str]:
    """`count` pretraining-style texts the stage-0 corpus does not contain, drawn like it (another seed)."""
    from rlhf_recipes.demo.run import DEMO_PIPELINE
    from rlhf_recipes.demo.task import TaskSettings, corpus_records, split_prompts

    task = {k: v for k, v in DEMO_PIPELINE["task"].items() if k != "provider"}
    settings = TaskSettings(**{**task, "num_corpus": count * 2})
    trained = {json.loads(line)["prompt"] for line in (run_dir / "data" / "corpus.jsonl").read_text().splitlines()}
    fresh = corpus_records(split_prompts(seed, settings).heldout, seed + 1000, settings)
    return [r["prompt"] + r["completion"] for r in fresh if r["prompt"] not in trained][:count]


def lm_loss(model_dir: Path, tokenizer_dir: Path, texts: list[str]) -> float:
    """Mean negative log-likelihood per predicted token of `texts` under the model in `model_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    with torch.no_grad():
        logits = model(**batch).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="sum", ignore_index=-100)
    return nll.item() / (labels[:, 1:] != -100).sum().item()


def run_demo(run_dir: Path, seed: int, ptx_coef: float) -> dict:
    """One pipeline run of the demo with `ptx_coef`, in a child process; wall and CPU seconds."""
    code = (
        "import copy, sys; from rlhf_recipes.demo.run import DEMO_PIPELINE; "
        "from rlhf_recipes.pipeline.spec import spec_from_dict; from rlhf_recipes.pipeline.runner import run_pipeline; "
        "d = copy.deepcopy(DEMO_PIPELINE); d['stages']['ppo']['ptx_coef'] = float(sys.argv[3]); "
        "run_pipeline(spec_from_dict(d, overrides={'output_dir': sys.argv[1], 'seed': int(sys.argv[2])}))"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load, start = os.getloadavg()[0], time.time()
    subprocess.run([sys.executable, "-c", code, str(run_dir), str(seed), str(ptx_coef)], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": round(time.time() - start, 1), "cpu_s": round(cpu, 1), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def measure(run_dir: Path, seed: int, ptx_coef: float, texts: list[str]) -> dict:
    evaluation = json.loads((run_dir / "evaluation.json").read_text())["stages"]
    sft_dir = Path(json.loads((run_dir / "selection.json").read_text())["chosen_path"])
    tokenizer_dir = run_dir / "data" / "tokenizer"
    row = {"seed": seed, "ptx_coef": ptx_coef}
    for stage, model_dir in (("pretrain", run_dir / "pretrain"), ("sft", sft_dir), ("ppo", run_dir / "ppo")):
        row[f"{stage}_lm_loss"] = lm_loss(model_dir, tokenizer_dir, texts)
    for stage in ("sft", "ppo"):
        row.update({f"{stage}_{k}": evaluation[stage][k] for k in GOLD if k in evaluation[stage]})
    return row


def markdown(result: dict) -> str:
    lines = ["# The demo's alignment tax: held-out LM loss vs gold metrics, PPO and PPO-ptx at equal budget", "",
             f"CPU: {result['cpu']}. Commands: {', '.join(f'`{c}`' for c in result['commands'])}. "
             f"Held-out pretraining-style texts: {result['num_texts']} per seed.", "",
             "| ptx_coef | seeds | LM loss stage 0 / SFT / PPO | PPO - SFT LM loss | greedy acc SFT -> PPO | "
             "sampled acc SFT -> PPO | KL to SFT |", "|---|---|---|---|---|---|---|"]
    for coef, rows in result["by_ptx_coef"].items():
        def mean(key):
            return statistics.mean(r[key] for r in rows)
        lines.append(
            f"| {coef} | {len(rows)} | {mean('pretrain_lm_loss'):.3f} / {mean('sft_lm_loss'):.3f} / "
            f"{mean('ppo_lm_loss'):.3f} | {mean('ppo_lm_loss') - mean('sft_lm_loss'):+.3f} | "
            f"{mean('sft_greedy_accuracy'):.1%} -> {mean('ppo_greedy_accuracy'):.1%} | "
            f"{mean('sft_sampled_accuracy'):.1%} -> {mean('ppo_sampled_accuracy'):.1%} | {mean('ppo_kl_to_sft'):.3f} |")
    lines += ["", "Runs (wall / CPU seconds, load average before -> after):", ""]
    lines += [f"- seed {r['seed']}, ptx_coef {r['ptx_coef']}: {r['wall_s']} s / {r['cpu_s']} s, load "
              f"{r['load_before']} -> {r['load_after']}" for r in result["runs"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ptx_coefs", type=float, nargs="+", default=[0.0, 0.5, 2.0])
    parser.add_argument("--num_texts", type=int, default=500)
    parser.add_argument("--work_dir", default="runs/alignment_tax_demo")
    parser.add_argument("--append", action="store_true",
                        help="Keep the runs already in the results file (other seeds or ptx_coefs), replacing repeats.")
    args = parser.parse_args()
    command = "python benchmarks/alignment_tax_demo.py " + " ".join(sys.argv[1:])
    path = RESULTS / "alignment_tax_demo.json"
    previous = json.loads(path.read_text()) if path.exists() and args.append else {"commands": [], "runs": []}
    result = {"cpu": cpu_model(), "commands": [*previous["commands"], command], "num_texts": args.num_texts,
              "runs": previous["runs"]}
    RESULTS.mkdir(exist_ok=True)
    for seed in args.seeds:
        run_dir = (REPO / args.work_dir / f"seed{seed}").resolve()
        texts = None
        for coef in args.ptx_coefs:
            timing = run_demo(run_dir, seed, coef)
            texts = texts or heldout_corpus(run_dir, seed, args.num_texts)
            row = {**measure(run_dir, seed, coef, texts), **timing}
            result["runs"] = [r for r in result["runs"] if (r["seed"], r["ptx_coef"]) != (seed, coef)] + [row]
            path.write_text(json.dumps(result, indent=1))  # after every run: a later failure keeps the earlier ones
            print(json.dumps(row), flush=True)
    result["by_ptx_coef"] = {}
    for row in sorted(result["runs"], key=lambda r: (r["ptx_coef"], r["seed"])):
        result["by_ptx_coef"].setdefault(str(row["ptx_coef"]), []).append(row)
    path.write_text(json.dumps(result, indent=1))
    (RESULTS / "alignment_tax_demo.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
