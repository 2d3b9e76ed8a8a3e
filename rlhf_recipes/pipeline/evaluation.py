"""The evaluation step: each stage's policy answers held-out prompts, for any task.

Always: mean response length in tokens and EOS rate (sampled at T=1), repetition (some word
immediately repeated, the degenerate pattern of bad demonstrations and of reward hacking) and
length in words of greedy and sampled answers, the reward model's mean score, and KL to the SFT
policy; with a task's gold metric, its checked metrics too. Side-by-side examples and the task's
reward-model checks go into `evaluation.json`.
"""

from dataclasses import dataclass, field

from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ..data import DataArguments, load_stage_dataset
from ..models.measure import generate_responses, reward_scores, sequence_logprobs
from .tasks import TaskProvider
from ..logs import bars_wanted


def load_prompts(dataset_name: str, num_prompts: int | None, data_split: str = "0,0,1") -> list:
    """The first `num_prompts` prompts of the PPO part of `data_split` of a file ("0,0,1": the whole
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


def text_metrics(answers: list[str], prefix: str) -> dict[str, float]:
    """Share of answers with a word immediately repeated ("7 7 7"), and their mean length in words."""
    words = [answer.split() for answer in answers]
    return {
        f"{prefix}_repetition": sum(any(a == b for a, b in zip(w, w[1:])) for w in words) / len(words),
        f"{prefix}_length": sum(len(w) for w in words) / len(words),
    }


@dataclass
class PolicyEvaluation:
    """A policy's answers on the evaluation prompts and the metrics computed from them."""

    metrics: dict[str, float]
    greedy_answers: list[str]
    sampled_answers: list[str] = field(default_factory=list)


def _decode(tokenizer, responses: list[list[int]]) -> list[str]:
    return [tokenizer.decode(r, skip_special_tokens=True).strip() for r in responses]


def evaluate_policy(
    policy,
    tokenizer,
    prompts: list[str],
    reward_model=None,
    reference=None,
    task: TaskProvider | None = None,
    seed: int = 0,
    max_new_tokens: int = 8,
    max_prompt_length: int | None = None,
) -> PolicyEvaluation:
    """Greedy and T=1 answers of `policy` on `prompts`, with their metrics (see the module doc).

    KL(policy || reference) is the mean over T=1 samples of log p_policy - log p_reference of the
    whole response.
    """
    cut = dict(max_prompt_length=max_prompt_length)
    greedy = generate_responses(policy, tokenizer, prompts, do_sample=False, max_new_tokens=max_new_tokens, **cut)
    sampled = generate_responses(
        policy, tokenizer, prompts, do_sample=True, temperature=1.0, seed=seed, max_new_tokens=max_new_tokens, **cut
    )
    greedy_text, sampled_text = _decode(tokenizer, greedy), _decode(tokenizer, sampled)
    eos = tokenizer.eos_token_id
    metrics = {
        "sampled_tokens": sum(len(r) - (r[-1:] == [eos]) for r in sampled) / len(sampled),
        "sampled_eos_rate": sum(r[-1:] == [eos] for r in sampled) / len(sampled),
        **text_metrics(greedy_text, "greedy"),
        **text_metrics(sampled_text, "sampled"),
    }
    if reward_model is not None:
        metrics["greedy_rm_score"] = reward_scores(reward_model, tokenizer, prompts, greedy, **cut).mean().item()
        metrics["sampled_rm_score"] = reward_scores(reward_model, tokenizer, prompts, sampled, **cut).mean().item()
    if reference is not None:
        own = sequence_logprobs(policy, tokenizer, prompts, sampled, **cut)
        ref = sequence_logprobs(reference, tokenizer, prompts, sampled, **cut)
        metrics["kl_to_sft"] = (own - ref).mean().item()
    if task is not None and task.has_gold:
        metrics.update(task.gold_metrics(prompts, greedy_text, "greedy"))
        metrics.update(task.gold_metrics(prompts, sampled_text, "sampled"))
    return PolicyEvaluation(metrics=metrics, greedy_answers=greedy_text, sampled_answers=sampled_text)


def evaluate_stages(settings: dict, task: TaskProvider | None, seed: int) -> dict:
    """Evaluate each policy of `settings["policies"]` (stage name -> model dir) on the step's prompts;
    returns evaluation.json's content."""
    prompts = load_prompts(settings["dataset_name"], settings["num_prompts"], settings["data_split"])
    gold = task if task is not None and task.has_gold else None
    reward_dir, max_prompt_length = settings["reward_dir"], settings.get("max_prompt_length")
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(settings["reference_dir"]).eval()
    texts = prompt_texts(tokenizer, prompts)
    stages, answers = {}, {}
    policies = tqdm(settings["policies"].items(), desc="Evaluating on held-out prompts", disable=not bars_wanted())
    for stage, path in policies:
        policy = AutoModelForCausalLM.from_pretrained(path).eval()
        result = evaluate_policy(
            policy, tokenizer, texts, reward_model=reward_model, reference=reference, task=gold, seed=seed,
            max_new_tokens=settings["max_new_tokens"], max_prompt_length=max_prompt_length,
        )
        stages[stage], answers[stage] = result.metrics, result.greedy_answers
    examples = []
    for i in (task or TaskProvider()).example_indices(texts, settings["num_examples"]):
        example = {"prompt": prompts[i], "answers": {stage: answers[stage][i] for stage in stages}}
        if gold:
            example["gold"] = gold.gold_answer(texts[i])
        examples.append(example)
    evaluation = {"gold": gold is not None, "num_prompts": len(prompts), "stages": stages, "examples": examples}
    if task is not None:
        evaluation.update(task.reward_model_checks(reward_model, tokenizer, texts))
    return evaluation
