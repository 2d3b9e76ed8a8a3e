"""The SFT checkpoint selection step (InstructGPT): every saved SFT checkpoint answers the validation
prompts greedily, the reward model scores the answers, and the best mean score wins: PPO's starting
policy and KL reference. With a task's gold metric, each candidate's gold accuracy is recorded (not
used for the choice)."""

import re
from pathlib import Path

from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ..artifacts.run_dir import TRAINER_STATE, read_json
from ..models.measure import generate_responses, reward_scores
from .evaluation import load_prompts, prompt_texts
from .tasks import TaskProvider
from ..logs import bars_wanted

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def sft_candidates(sft_dir: Path) -> list[dict]:
    """The SFT checkpoints (`checkpoint-<step>` with weights) and the final model, by step.

    The final model is listed only when no checkpoint was saved at its step.
    """
    candidates = []
    for path in sft_dir.iterdir() if sft_dir.is_dir() else []:
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / "config.json").is_file():
            candidates.append({"checkpoint": path.name, "step": int(match.group(1)), "path": str(path)})
    state = read_json(sft_dir / TRAINER_STATE)
    final_step = state["global_step"] if state else None
    if (sft_dir / "config.json").is_file() and final_step not in {c["step"] for c in candidates}:
        candidates.append({"checkpoint": "final", "step": final_step, "path": str(sft_dir)})
    return sorted(candidates, key=lambda c: (c["step"] is None, c["step"] or 0))


def select_sft_checkpoint(settings: dict, task: TaskProvider | None) -> dict:
    """Score each SFT candidate's greedy answers with the RM; the highest mean score is chosen (ties:
    the later step). Returns selection.json's content."""
    sft_dir, reward_dir = Path(settings["sft_dir"]), settings["reward_dir"]
    max_new_tokens, max_prompt_length = settings["max_new_tokens"], settings.get("max_prompt_length")
    candidates = sft_candidates(sft_dir)
    if not candidates:
        raise FileNotFoundError(f"No SFT model or checkpoint in {sft_dir}; run the sft stage first.")
    prompts = load_prompts(settings["dataset_name"], settings["num_prompts"], settings["data_split"])
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    texts = prompt_texts(tokenizer, prompts)
    for candidate in tqdm(candidates, desc="Scoring SFT checkpoints with the RM", disable=not bars_wanted()):
        policy = AutoModelForCausalLM.from_pretrained(candidate["path"]).eval()
        responses = generate_responses(
            policy, tokenizer, texts, do_sample=False, max_new_tokens=max_new_tokens, max_prompt_length=max_prompt_length
        )
        scores = reward_scores(reward_model, tokenizer, texts, responses, max_prompt_length=max_prompt_length)
        candidate["rm_score"] = scores.mean().item()
        if task is not None and task.has_gold:
            answers = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
            candidate["gold_accuracy"] = task.gold_metrics(texts, answers, "greedy")["greedy_accuracy"]
    best = max(candidates, key=lambda c: (c["rm_score"], c["step"] or 0))
    return {
        "criterion": "mean reward-model score of greedy answers to the validation prompts",
        "num_prompts": len(prompts),
        "candidates": candidates,
        "chosen": best["checkpoint"],
        "chosen_path": best["path"],
    }
