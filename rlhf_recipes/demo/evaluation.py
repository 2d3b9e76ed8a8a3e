"""The pipeline's two model-judging steps, for the demo task or any prompts:

- SFT checkpoint selection (InstructGPT): every saved SFT checkpoint answers the validation
  prompts greedily; the reward model scores the answers; the best mean score wins and becomes
  PPO's starting policy and KL reference.
- held-out evaluation: the pretrained, SFT and PPO policies answer the held-out prompts; their
  metrics (`metrics.evaluate_policy`), side-by-side examples and, for the demo task, the RM's
  ranked-first rate go into `evaluation.json`.
"""

import json
import re
from pathlib import Path

from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ..data import DataArguments, load_stage_dataset
from .metrics import evaluate_policy, generate_responses, gold_metrics, ranked_first_rate, reward_scores
from .task import gold_answer, is_hard, parse_prompt

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def load_prompts(dataset_name: str, num_prompts: int | None, data_split: str = "0,0,1") -> list:
    """The first `num_prompts` prompts of the PPO part of `data_split` of a file (default: the whole
    file), read by the data layer (strings or message lists)."""
    args = DataArguments(dataset_name=dataset_name, data_split=data_split, eval_split_size=0)
    prompts = load_stage_dataset(args, "ppo")["train"]["prompt"]
    return prompts[:num_prompts] if num_prompts else prompts


def prompt_texts(tokenizer, prompts: list) -> list[str]:
    """Prompts as the text a policy continues: message lists through the chat template."""
    return [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list) else p
        for p in prompts
    ]


def sft_candidates(sft_dir: Path) -> list[dict]:
    """The SFT checkpoints (`checkpoint-<step>` with weights) and the final model, by step.

    The final model is listed only when no checkpoint was saved at its step.
    """
    candidates = []
    for path in sft_dir.iterdir() if sft_dir.is_dir() else []:
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / "config.json").is_file():
            candidates.append({"checkpoint": path.name, "step": int(match.group(1)), "path": str(path)})
    state_file = sft_dir / "trainer_state.json"
    final_step = json.loads(state_file.read_text())["global_step"] if state_file.is_file() else None
    if (sft_dir / "config.json").is_file() and final_step not in {c["step"] for c in candidates}:
        candidates.append({"checkpoint": "final", "step": final_step, "path": str(sft_dir)})
    return sorted(candidates, key=lambda c: (c["step"] is None, c["step"] or 0))


def select_sft_checkpoint(
    sft_dir: Path, reward_dir: Path, prompts: list, gold: bool, max_new_tokens: int, max_prompt_length: int | None = None
) -> dict:
    """Score each SFT candidate's greedy answers with the RM; the highest mean score is chosen
    (ties: the later step). With `gold`, each candidate's gold accuracy is recorded, not used."""
    candidates = sft_candidates(sft_dir)
    if not candidates:
        raise FileNotFoundError(f"No SFT model or checkpoint in {sft_dir}; run the sft stage first.")
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    texts = prompt_texts(tokenizer, prompts)
    for candidate in tqdm(candidates, desc="Scoring SFT checkpoints with the RM"):
        policy = AutoModelForCausalLM.from_pretrained(candidate["path"]).eval()
        responses = generate_responses(
            policy, tokenizer, texts, do_sample=False, max_new_tokens=max_new_tokens, max_prompt_length=max_prompt_length
        )
        scores = reward_scores(reward_model, tokenizer, texts, responses, max_prompt_length=max_prompt_length)
        candidate["rm_score"] = scores.mean().item()
        if gold:
            answers = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
            candidate["gold_accuracy"] = gold_metrics(texts, answers, "greedy")["greedy_accuracy"]
    best = max(candidates, key=lambda c: (c["rm_score"], c["step"] or 0))
    return {
        "criterion": "mean reward-model score of greedy answers to the validation prompts",
        "num_prompts": len(prompts),
        "candidates": candidates,
        "chosen": best["checkpoint"],
        "chosen_path": best["path"],
    }


def example_indices(prompts: list[str], count: int, gold: bool) -> list[int]:
    """Prompts shown side by side: for the demo task half from the hard subset, else the first ones."""
    if not gold:
        return list(range(min(count, len(prompts))))
    hard = [i for i, p in enumerate(prompts) if is_hard(parse_prompt(p))]
    easy = [i for i, p in enumerate(prompts) if not is_hard(parse_prompt(p))]
    chosen = hard[: count // 2] + easy[: count - min(count // 2, len(hard))]
    return sorted(chosen)


def evaluate_stages(
    policies: dict[str, str],
    reward_dir: str,
    reference_dir: str,
    prompts: list,
    gold: bool,
    seed: int,
    max_new_tokens: int,
    num_examples: int,
    max_prompt_length: int | None = None,
) -> dict:
    """Evaluate each policy (stage name -> model dir) on `prompts`; returns evaluation.json's content."""
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(reference_dir).eval()
    texts = prompt_texts(tokenizer, prompts)
    options = dict(gold=gold, seed=seed, max_new_tokens=max_new_tokens, max_prompt_length=max_prompt_length)
    stages, answers = {}, {}
    for stage, path in tqdm(policies.items(), desc="Evaluating on held-out prompts"):
        policy = AutoModelForCausalLM.from_pretrained(path).eval()
        result = evaluate_policy(policy, tokenizer, texts, reward_model=reward_model, reference=reference, **options)
        stages[stage], answers[stage] = result.metrics, result.greedy_answers
    examples = []
    for i in example_indices(texts, num_examples, gold):
        example = {"prompt": prompts[i], "answers": {stage: answers[stage][i] for stage in policies}}
        if gold:
            example["gold"] = gold_answer(texts[i])
        examples.append(example)
    evaluation = {"gold": gold, "num_prompts": len(prompts), "stages": stages, "examples": examples}
    if gold:
        evaluation["rm_ranked_first"] = ranked_first_rate(reward_model, tokenizer, texts)
    return evaluation

