"""The evaluation step's optional parts, on tiny models saved as a run's stages hold them: fixed probe
prompts answered greedily by every policy (chat probes through the chat template, a new turn the model
starts cut off, probes.json written and removed), the held-out LM loss (per-token NLL whatever the
batching, drawing no random numbers), and both shown in the report with their text escaped."""

import base64
import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_recipes.artifacts.run_dir import EVALUATION, PROBES, write_json
from rlhf_recipes.models import build_byte_tokenizer
from rlhf_recipes.models.measure import generate_responses
from rlhf_recipes.pipeline.evaluation import (
    answer_text,
    evaluate_stages,
    lm_loss,
    next_turn_marker,
    probe_conversations,
)
from rlhf_recipes.pipeline.tasks import TaskProvider
from rlhf_recipes.report.build import build_report, format_summary

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROBE_LIST = [
    "How does a telescope work?",
    "天空为什么是蓝色的？",
    '<b>bold</b> & "quoted"',
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And?"}],
]
HH_ROWS = [
    {"chosen": f"\n\nHuman: Question {i}?\n\nAssistant: Answer {i}.", "rejected": f"\n\nHuman: Question {i}?\n\nAssistant: No."}
    for i in range(3)
]


class TextsTask(TaskProvider):
    """A task without gold answers that only brings held-out LM texts."""

    heldout_lm_about = "three test sentences"

    def heldout_lm_texts(self, seed: int) -> list[str]:
        return ["The sky is blue.", "Birds fly south.", "A telescope gathers light with a lens or a mirror."]


@pytest.fixture(scope="module")
def tokenizer():
    return build_byte_tokenizer()


@pytest.fixture(scope="module")
def run(tmp_path_factory, save_tiny_model):
    """A run directory with base, SFT and PPO policies (different random inits), a reward model, a PPO config
    with ptx_coef, and the evaluation of the three policies with probes and LM texts."""
    root = tmp_path_factory.mktemp("run")
    policies = {}
    for seed, stage in enumerate(("base", "sft", "ppo")):
        torch.manual_seed(seed)
        policies[stage] = save_tiny_model(root / stage)
    save_tiny_model(root / "reward", task="seq-cls")
    heldout = root / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(row) + "\n" for row in HH_ROWS))
    (root / "configs").mkdir()
    (root / "configs" / "ppo.yaml").write_text("ptx_coef: 0.5\n")
    settings = {
        "dataset_name": str(heldout), "data_split": "0,0,1", "num_prompts": 3, "max_new_tokens": 6,
        "max_prompt_length": 64, "num_examples": 2, "reward_dir": str(root / "reward"),
        "reference_dir": policies["sft"], "policies": policies, "probe_prompts": PROBE_LIST,
    }
    evaluation = evaluate_stages(settings, TextsTask(), seed=0, probes_path=root / PROBES)
    write_json(root / EVALUATION, evaluation)
    return root, settings, evaluation


def test_every_policy_answers_every_probe_greedily_through_the_chat_template(run, tokenizer):
    root, settings, _ = run
    probes = json.loads((root / PROBES).read_text())
    assert probes["policies"] == ["base", "sft", "ppo"] and probes["decoding"] == "greedy"
    assert [record["prompt"] for record in probes["probes"]] == PROBE_LIST
    for record in probes["probes"]:
        assert set(record["answers"]) == {"base", "sft", "ppo"}
        assert all(isinstance(answer, str) for answer in record["answers"].values())
    # the held-out prompts are conversations, so a plain probe is one user turn: the same greedy answer as
    # generating from its chat-template text
    policy = AutoModelForCausalLM.from_pretrained(settings["policies"]["sft"])
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROBE_LIST[0]}], tokenize=False,
                                         add_generation_prompt=True)
    response = generate_responses(policy, tokenizer, [text], do_sample=False, max_new_tokens=6)[0]
    assert probes["probes"][0]["answers"]["sft"] == answer_text(tokenizer, response, "Human:")


def test_plain_probes_stay_plain_text_where_the_prompts_are():
    assert probe_conversations(["Q: max 1 2 3 4 A:"], conversational=False) == ["Q: max 1 2 3 4 A:"]
    assert probe_conversations(["Hi", [{"role": "user", "content": "Yo"}]], conversational=True) == [
        [{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Yo"}]]


def test_a_new_turn_the_model_starts_is_cut_and_special_tokens_go(tokenizer):
    assert next_turn_marker(tokenizer) == "Human:"
    chatml = build_byte_tokenizer()
    chatml.chat_template = CHATML
    assert next_turn_marker(chatml) == "<|im_start|>user"
    ids = tokenizer("Light is bent.\n\nHuman: and then?</s>", add_special_tokens=False)["input_ids"]
    assert answer_text(tokenizer, ids, "Human:") == "Light is bent."
    assert answer_text(tokenizer, ids, None) == "Light is bent.\n\nHuman: and then?"


def test_lm_loss_is_the_mean_nll_per_token_whatever_the_batching_and_draws_nothing(run, tokenizer):
    root, settings, evaluation = run
    model = AutoModelForCausalLM.from_pretrained(settings["policies"]["sft"]).eval()
    texts = TextsTask().heldout_lm_texts(0)
    total, count = 0.0, 0
    for text in texts:  # one unpadded text at a time
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    batched = lm_loss(model, tokenizer, texts, batch_size=2)
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    assert batched == pytest.approx(total / count, rel=1e-5)
    assert evaluation["stages"]["sft"]["lm_loss"] == pytest.approx(total / count, rel=1e-5)
    assert evaluation["lm_loss_texts"] == {"num_texts": 3, "about": "three test sentences"}
    assert {stage: "lm_loss" in metrics for stage, metrics in evaluation["stages"].items()} == {
        "base": True, "sft": True, "ppo": True}


def test_report_shows_probes_and_the_alignment_tax_escaped_and_embedded(run):
    root, _, evaluation = run
    built = build_report(root)
    html, md = built.html.read_text(), built.markdown.read_text()
    probes = html[html.index("Probe prompts, answered by each policy"):]
    probes = probes[: probes.index("</table>")]
    assert "<th>prompt</th><th>base</th><th>SFT</th><th>PPO</th>" in probes
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;" in probes and "<b>bold</b>" not in html
    assert "天空为什么是蓝色的？" in probes and "How does a telescope work?" in probes
    assert "user: Hi | assistant: Hello. | user: And?" in probes  # a conversation probe, role by role
    assert probes.count("<tr>") == 1 + len(PROBE_LIST)
    assert "| prompt | base | SFT | PPO |" in md
    assert "Alignment tax" in html and "LM loss (nats/token)" in html and "ptx_coef 0.5" in html
    sft_loss = evaluation["stages"]["sft"]["lm_loss"]
    assert f"<td>{sft_loss:.3f}</td>" in html and "three test sentences" in html
    png = (root / "plots" / "alignment_tax.png").read_bytes()
    assert base64.b64encode(png).decode() in html and "plots/alignment_tax.png" in md
    assert f"SFT {sft_loss:.3f}" in format_summary(root, built)


def test_without_probes_no_probes_file_is_left(run):
    root, settings, _ = run
    stale = root / "rerun" / PROBES
    stale.parent.mkdir()
    stale.write_text("{}")
    evaluate_stages({**settings, "probe_prompts": None, "num_prompts": 1}, None, seed=0, probes_path=stale)
    assert not stale.exists()
