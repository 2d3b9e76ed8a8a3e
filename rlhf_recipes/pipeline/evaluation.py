"""The evaluation step: each stage's policy answers held-out prompts, for any task.

Always: mean response length in tokens and EOS rate (sampled at T=1), repetition (some word
immediately repeated, the degenerate pattern of bad demonstrations and of reward hacking) and
length in words of greedy and sampled answers, the reward model's mean score, and KL to the SFT
policy; with a task's gold metric, its checked metrics too. Side-by-side examples and the task's
reward-model checks go into `evaluation.json`.

Optional: the held-out language-model loss of each policy on texts a task gives (the alignment tax:
what RLHF costs the model on pretraining-style text), and fixed probe prompts (`probe_prompts`)
answered greedily by each policy, written to `probes.json`.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ..artifacts.run_dir import write_json
from ..data import DataArguments, load_stage_dataset
from ..models.gguf import resolve_model_path
from ..models.measure import generate_responses, reward_scores, sequence_logprobs
from .tasks import TaskProvider
from ..logs import bars_wanted

# Stand-ins rendered through a chat template to find the text that starts a new user turn.
_ANSWER, _QUESTION = "\x02ANSWER\x03", "\x02QUESTION\x03"


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


@torch.no_grad()
def lm_loss(model, tokenizer, texts: list[str], batch_size: int = 64) -> float:
    """Mean negative log-likelihood per predicted token (nats/token) of `texts` under `model`:
    `sum_i sum_{t>=1} -log p(x_it | x_i<t) / #predicted tokens`. A token counts when it and the one
    before it are real: a padded row's first token has no context, as in an unpadded one. No sampling,
    so it draws nothing from any random generator."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        mask = batch["attention_mask"]
        labels = batch["input_ids"][:, 1:].masked_fill((mask[:, 1:] * mask[:, :-1]) == 0, -100)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        total += torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="sum").item()
        count += int((labels != -100).sum())
    return total / count if count else math.nan


def probe_conversations(probes: list, conversational: bool) -> list:
    """Probe prompts in the form of the evaluation's prompts: with conversational prompts, a plain
    string becomes one user turn (and so goes through the chat template); message lists stay as they are."""
    return [[{"role": "user", "content": p}] if conversational and isinstance(p, str) else p for p in probes]


def next_turn_marker(tokenizer) -> str | None:
    """The line with which the chat template starts a user turn after an assistant turn (without the
    end-of-turn token), e.g. `<|im_start|>user` or `Human:`; None when the template shows none."""
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _ANSWER},
            {"role": "user", "content": _QUESTION}]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    except Exception:  # a template that refuses this shape shows no marker
        return None
    if _ANSWER not in text or _QUESTION not in text:
        return None
    lines = [line.strip() for line in text.split(_ANSWER, 1)[1].split(_QUESTION, 1)[0].splitlines() if line.strip()]
    marker = lines[-1] if lines else ""
    if tokenizer.eos_token and marker.startswith(tokenizer.eos_token):
        marker = marker[len(tokenizer.eos_token) :].strip()
    return marker or None


def answer_text(tokenizer, response: list[int], marker: str | None) -> str:
    """A response as text: cut where the model starts another turn (`marker`), special tokens removed."""
    text = tokenizer.decode(response, skip_special_tokens=False)
    if marker and marker in text:
        text = text[: text.index(marker)]
    for token in tokenizer.all_special_tokens:
        text = text.replace(token, "")
    return text.strip()


def answer_probes(policy, tokenizer, probes: list, conversational: bool, max_new_tokens: int,
                  max_prompt_length: int | None = None) -> list[str]:
    """The greedy (deterministic) answer of `policy` to each probe prompt, as text (`answer_text`)."""
    texts = prompt_texts(tokenizer, probe_conversations(probes, conversational))
    responses = generate_responses(policy, tokenizer, texts, do_sample=False, max_new_tokens=max_new_tokens,
                                   max_prompt_length=max_prompt_length)
    marker = next_turn_marker(tokenizer) if conversational else None
    return [answer_text(tokenizer, response, marker) for response in responses]


def _write_probes(path: Path | None, probes: list, answers: dict[str, list[str]], max_new_tokens: int) -> None:
    """probes.json: each probe with every policy's answer; a stale file goes when there are no probes."""
    if path is None:
        return
    if not probes:
        Path(path).unlink(missing_ok=True)
        return
    records = [{"prompt": p, "answers": {stage: answers[stage][i] for stage in answers}} for i, p in enumerate(probes)]
    write_json(path, {"policies": list(answers), "decoding": "greedy", "max_new_tokens": max_new_tokens,
                      "probes": records})


def evaluate_stages(settings: dict, task: TaskProvider | None, seed: int, probes_path: Path | None = None) -> dict:
    """Evaluate each policy of `settings["policies"]` (stage name -> model dir) on the step's prompts;
    returns evaluation.json's content and writes the probe answers to `probes_path`.

    Per policy, in this order: the held-out metrics (their sampling is seeded by `seed`), then the
    LM loss on the task's held-out texts and the greedy probe answers, neither of which samples.
    """
    prompts = load_prompts(settings["dataset_name"], settings["num_prompts"], settings["data_split"])
    gold = task if task is not None and task.has_gold else None
    reward_dir, max_prompt_length = settings["reward_dir"], settings.get("max_prompt_length")
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(settings["reference_dir"]).eval()
    texts = prompt_texts(tokenizer, prompts)
    lm_texts = task.heldout_lm_texts(seed) if task is not None else []
    probes = settings.get("probe_prompts") or []
    conversational = bool(prompts) and isinstance(prompts[0], list)
    stages, answers, probe_answers = {}, {}, {}
    policies = tqdm(settings["policies"].items(), desc="Evaluating on held-out prompts", disable=not bars_wanted())
    for stage, path in policies:
        policy = AutoModelForCausalLM.from_pretrained(resolve_model_path(path)).eval()
        result = evaluate_policy(
            policy, tokenizer, texts, reward_model=reward_model, reference=reference, task=gold, seed=seed,
            max_new_tokens=settings["max_new_tokens"], max_prompt_length=max_prompt_length,
        )
        if lm_texts:
            result.metrics["lm_loss"] = lm_loss(policy, tokenizer, lm_texts)
        if probes:
            probe_answers[stage] = answer_probes(policy, tokenizer, probes, conversational,
                                                 settings["max_new_tokens"], max_prompt_length)
        stages[stage], answers[stage] = result.metrics, result.greedy_answers
    _write_probes(probes_path, probes, probe_answers, settings["max_new_tokens"])
    examples = []
    for i in (task or TaskProvider()).example_indices(texts, settings["num_examples"]):
        example = {"prompt": prompts[i], "answers": {stage: answers[stage][i] for stage in stages}}
        if gold:
            example["gold"] = gold.gold_answer(texts[i])
        examples.append(example)
    evaluation = {"gold": gold is not None, "num_prompts": len(prompts), "stages": stages, "examples": examples}
    if lm_texts:
        evaluation["lm_loss_texts"] = {"num_texts": len(lm_texts), "about": task.heldout_lm_about}
    if task is not None:
        evaluation.update(task.reward_model_checks(reward_model, tokenizer, texts))
    return evaluation
