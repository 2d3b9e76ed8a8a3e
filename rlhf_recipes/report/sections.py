"""The report's content: each function turns part of a run's artifacts into report sections,
and returns nothing for a part the run does not have."""

import math

import yaml

from .render import FAIL_MARK, PASS_MARK, Image, Preformatted, Section, Table, Text
from ..artifacts.run_dir import STEP_TITLES, RunArtifacts

# (column label, metric key, format); the first list for runs with a gold metric.
GOLD_COLUMNS = [
    ("greedy acc", "greedy_accuracy", "pct"),
    ("hard-subset acc", "greedy_accuracy_hard", "pct"),
    ("T=1 acc", "sampled_accuracy", "pct"),
    ("repetition T=1", "sampled_repetition", "pct"),
    ("length T=1", "sampled_length", "num"),
    ("RM score T=1", "sampled_rm_score", "signed"),
    ("KL to SFT", "kl_to_sft", "num"),
]
GENERIC_COLUMNS = [
    ("tokens T=1", "sampled_tokens", "num"),
    ("EOS rate T=1", "sampled_eos_rate", "pct"),
    ("RM score greedy", "greedy_rm_score", "signed"),
    ("RM score T=1", "sampled_rm_score", "signed"),
    ("KL to SFT", "kl_to_sft", "num"),
]
STAGE_LABELS = {"pretrained": "pretrained", "base": "base", "sft": "SFT", "ppo": "PPO"}
DISPLAY_CHARS = 120
PROBE_CHARS = 700
# The alignment-tax table: the LM loss beside what the stage bought with it (gold or generic headline).
TAX_COLUMNS = {
    True: [("greedy acc", "greedy_accuracy", "pct"), ("T=1 acc", "sampled_accuracy", "pct"),
           ("RM score T=1", "sampled_rm_score", "signed"), ("KL to SFT", "kl_to_sft", "num")],
    False: [("RM score greedy", "greedy_rm_score", "signed"), ("RM score T=1", "sampled_rm_score", "signed"),
            ("KL to SFT", "kl_to_sft", "num")],
}
# The alignment-tax plot's y axis: (metric key, axis label, scale to the table's unit).
TAX_HEADLINE = {
    True: ("greedy_accuracy", "greedy exact-match accuracy (% of held-out prompts)", 100.0),
    False: ("sampled_rm_score", "mean RM score of T=1 answers (reward-model units)", 1.0),
}


def fmt(value, kind: str) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "signed":
        return f"{value:+.3f}"
    return f"{value:.3f}"


def display(value, keep_end: bool = False, limit: int = DISPLAY_CHARS) -> str:
    """One short line; a message list becomes `role: content | ...`; long text is cut."""
    if isinstance(value, list):
        value = " | ".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in value if isinstance(m, dict))
    text = " ".join(str(value if value is not None else "").split())
    if len(text) <= limit:
        return text
    return "..." + text[-limit:] if keep_end else text[:limit] + "..."


def stage_metrics_table(evaluation: dict) -> Table:
    """One row per evaluated stage, the gold or the generic metric columns."""
    columns = GOLD_COLUMNS if evaluation.get("gold") else GENERIC_COLUMNS
    rows = [
        [STAGE_LABELS.get(stage, stage)] + [fmt(metrics.get(key), kind) for _, key, kind in columns]
        for stage, metrics in evaluation.get("stages", {}).items()
    ]
    return Table(["stage"] + [label for label, _, _ in columns], rows)


def verdict(evaluation: dict | None) -> str | None:
    """The headline: what PPO did to gold accuracy, repetition and RM score versus SFT."""
    if not evaluation or "sft" not in evaluation.get("stages", {}) or "ppo" not in evaluation["stages"]:
        return None
    sft, ppo = evaluation["stages"]["sft"], evaluation["stages"]["ppo"]
    n = evaluation.get("num_prompts", "the")
    if not evaluation.get("gold"):
        return (
            f"No gold metric for this data: the report shows the reward model's evaluation and the answers of each "
            f"stage on {n} held-out prompts. Mean RM score of greedy answers: SFT {fmt(sft.get('greedy_rm_score'), 'signed')}"
            f" -> PPO {fmt(ppo.get('greedy_rm_score'), 'signed')}."
        )
    delta = 100 * (ppo["greedy_accuracy"] - sft["greedy_accuracy"])
    moved = "raised" if delta > 0 else "did not raise"
    return (
        f"On {n} held-out prompts never seen in training, PPO {moved} greedy exact-match accuracy: "
        f"{fmt(sft['greedy_accuracy'], 'pct')} after SFT -> {fmt(ppo['greedy_accuracy'], 'pct')} after PPO "
        f"({delta:+.1f} points; sampled at T=1: {fmt(sft.get('sampled_accuracy'), 'pct')} -> "
        f"{fmt(ppo.get('sampled_accuracy'), 'pct')}). Repetitive answers at T=1: "
        f"{fmt(sft.get('sampled_repetition'), 'pct')} -> {fmt(ppo.get('sampled_repetition'), 'pct')}. "
        f"Mean RM score at T=1: {fmt(sft.get('sampled_rm_score'), 'signed')} -> {fmt(ppo.get('sampled_rm_score'), 'signed')}."
    )


def metrics_section(evaluation: dict | None, bars: str | None) -> list[Section]:
    if not evaluation or not evaluation.get("stages"):
        return []
    gold = evaluation.get("gold")
    about = (
        f"{evaluation.get('num_prompts', '?')} held-out prompts, never seen by any stage. "
        + (
            "Accuracy is exact match against the correct answer computed by code (the gold rule), greedy and "
            "sampled at temperature 1; the hard subset is where the demonstrations were mostly wrong. "
            if gold
            else ""
        )
        + "RM score: mean reward-model score of the answers. KL to SFT: mean over T=1 samples of "
        "log p_stage(answer) - log p_SFT(answer)."
    )
    blocks = [Text(about), stage_metrics_table(evaluation)]
    if bars:
        blocks.append(Image(bars, "metrics by stage"))
    return [Section("Held-out metrics by stage" if gold else "Held-out measures by stage", blocks)]


def lm_loss_stages(evaluation: dict | None) -> dict[str, dict]:
    """The evaluated stages that have a held-out LM loss, in evaluation order."""
    return {s: m for s, m in ((evaluation or {}).get("stages") or {}).items() if isinstance(m.get("lm_loss"), int | float)}


def alignment_tax_section(evaluation: dict | None, plot: str | None, ptx_coef: float | None) -> list[Section]:
    """Held-out LM loss of each stage beside its headline metrics: what alignment cost the language model."""
    stages = lm_loss_stages(evaluation)
    if not stages:
        return []
    gold = bool(evaluation.get("gold"))
    sft_loss = stages.get("sft", {}).get("lm_loss")
    rows = []
    for stage, metrics in stages.items():
        change = metrics["lm_loss"] - sft_loss if sft_loss is not None else None
        rows.append([STAGE_LABELS.get(stage, stage), fmt(metrics["lm_loss"], "num"), fmt(change, "signed")]
                    + [fmt(metrics.get(key), kind) for _, key, kind in TAX_COLUMNS[gold]])
    headers = ["stage", "LM loss (nats/token)", "LM loss vs SFT"] + [label for label, _, _ in TAX_COLUMNS[gold]]
    about = (evaluation.get("lm_loss_texts") or {}).get("about") or "held-out texts"
    ptx = ""
    if ptx_coef:
        ptx = (f" This run's PPO mixed the pretraining LM loss into its updates with ptx_coef {ptx_coef:g} "
               "(PPO-ptx), which is meant to pay the tax back.")
    elif ptx_coef is not None:
        ptx = " This run's PPO had no pretraining term (ptx_coef 0)."
    text = (
        f"The alignment tax (InstructGPT): mean negative log-likelihood per token of each stage's model on {about}, "
        f"beside what the stage achieved on the held-out prompts. Higher LM loss means the stage forgot more of "
        f"what pretraining taught.{ptx}"
    )
    blocks = [Text(text), Table(headers, rows)]
    if plot:
        blocks.append(Image(plot, "alignment tax: LM loss against the headline metric"))
    return [Section("Alignment tax: language-model loss on held-out pretraining-style text", blocks)]


def _probe_prompt(prompt) -> str:
    """A probe as the user wrote it: the text of a single user turn, a conversation as `role: content | ...`."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], dict):
        prompt = prompt[0].get("content", "")
    return display(prompt, limit=PROBE_CHARS)


def probes_section(probes: dict | None) -> list[Section]:
    """The pipeline's fixed probe prompts, one row each, every policy's greedy answer side by side."""
    records = (probes or {}).get("probes") or []
    if not records:
        return []
    stages = probes.get("policies") or list(records[0]["answers"])
    headers = ["prompt"] + [STAGE_LABELS.get(stage, stage) for stage in stages]
    rows = [
        [_probe_prompt(record["prompt"])]
        + [display(record["answers"].get(stage), limit=PROBE_CHARS) or "(empty or only whitespace)" for stage in stages]
        for record in records
    ]
    note = (
        f"Fixed probe prompts from the pipeline's evaluation settings, answered greedily by each policy (at most "
        f"{probes.get('max_new_tokens', '?')} new tokens); chat prompts go through the chat template, special "
        "tokens are removed and an answer is cut where the model starts a new turn."
    )
    return [Section("Probe prompts, answered by each policy", [Text(note), Table(headers, rows)])]


def side_by_side_section(evaluation: dict | None) -> list[Section]:
    examples = (evaluation or {}).get("examples") or []
    if not examples:
        return []
    stages = list(examples[0]["answers"])
    gold = "gold" in examples[0]
    headers = ["prompt"] + (["correct"] if gold else []) + [STAGE_LABELS.get(s, s) for s in stages]
    rows = []
    for example in examples:
        row = [display(example["prompt"], keep_end=True)] + ([example["gold"]] if gold else [])
        for stage in stages:
            answer = display(example["answers"][stage])
            if gold:
                answer = f"{PASS_MARK if answer == example['gold'] else FAIL_MARK} {answer or '(empty)'}"
            elif not answer:
                answer = "(empty or only whitespace)"
            row.append(answer)
        rows.append(row)
    note = "Greedy answers of each stage to the same held-out prompts."
    return [Section("The same prompts, answered by each stage", [Text(note), Table(headers, rows)])]


def selection_section(selection: dict | None) -> list[Section]:
    if not selection:
        return []
    has_gold = any("gold_accuracy" in c for c in selection["candidates"])
    headers = ["checkpoint", "step", "mean RM score"] + (["gold accuracy (not used to choose)"] if has_gold else []) + ["chosen"]
    rows = []
    for candidate in selection["candidates"]:
        row = [candidate["checkpoint"], str(candidate.get("step", "-")), fmt(candidate["rm_score"], "signed")]
        if has_gold:
            row.append(fmt(candidate.get("gold_accuracy"), "pct"))
        row.append(PASS_MARK if candidate["checkpoint"] == selection["chosen"] else "")
        rows.append(row)
    text = (
        f"As in InstructGPT, the SFT checkpoint that starts PPO (and is its KL reference) is the one whose greedy "
        f"answers get the highest mean reward-model score on {selection.get('num_prompts', '?')} validation prompts. "
        f"Chosen: {selection['chosen']}."
    )
    return [Section("SFT checkpoint selection", [Text(text), Table(headers, rows)])]


def reward_section(run: RunArtifacts, plot: str | None, max_pairs: int = 10) -> list[Section]:
    report, ranked = run.rm_eval, (run.evaluation or {}).get("rm_ranked_first")
    if not report and ranked is None and not plot:
        return []
    blocks = []
    if report:
        summary = [
            ["held-out pairs", str(report["num_pairs"])],
            ["pair accuracy (good scored above bad)", fmt(report["accuracy"], "pct")],
            ["mean margin (good - bad)", fmt(report["mean_margin"], "signed")],
            ["mean score of good answers", fmt(report["chosen_mean"], "signed")],
            ["mean score of bad answers", fmt(report["rejected_mean"], "signed")],
        ]
        if ranked is not None:
            summary.append(["correct answer ranked first among all candidates", fmt(ranked, "pct")])
        blocks.append(Table(["measure", "value"], summary))
        rows = [
            [
                display(pair["prompt"], keep_end=True, limit=60),
                display(pair["chosen"], limit=60),
                fmt(pair["chosen_score"], "signed"),
                display(pair["rejected"], limit=60),
                fmt(pair["rejected_score"], "signed"),
                f"{PASS_MARK if pair['margin'] > 0 else FAIL_MARK} {pair['margin']:+.3f}",
            ]
            for pair in report["pairs"][:max_pairs]
        ]
        caption = f"The first {len(rows)} held-out pairs."
        blocks.append(Table(["prompt", "good answer", "score", "bad answer", "score", "margin"], rows, caption))
    elif ranked is not None:
        blocks.append(Text(f"Correct answer ranked first among all candidates: {fmt(ranked, 'pct')}."))
    if ranked is not None:
        blocks.append(
            Text(
                "Pair accuracy can hide reward hacking: the ranked-first rate checks, on held-out prompts, that the "
                "correct answer outscores every other one-digit answer and its own repetitions."
            )
        )
    if plot:
        blocks.append(Image(plot, "reward model training"))
    return [Section("Reward model", blocks)]


def curves_section(plots: dict[str, str | None], ppo_constants: dict[str, float] | None = None) -> list[Section]:
    """The curve images, then the PPO series that never changed (not plotted), as values."""
    blocks = [Image(path, STEP_TITLES.get(stage, stage)) for stage, path in plots.items() if path]
    if ppo_constants:
        values = ", ".join(f"{key} = {value:g}" for key, value in ppo_constants.items())
        blocks.append(Text(f"Constant throughout PPO (not plotted): {values}."))
    return [Section("Training curves", blocks)] if blocks else []


_SAMPLE_COLUMNS = (
    ("step", "update", "episode", "global_step"),
    ("prompt", "query"),
    ("response", "completion"),
    ("score", "reward", "scores"),
)


def ppo_samples_section(samples: list[dict], per_end: int = 4) -> list[Section]:
    """The first and the last PPO samples logged during training."""
    if not samples:
        return []
    keys = {key for record in samples for key in record}
    columns = [next(name for name in group if name in keys) for group in _SAMPLE_COLUMNS if keys.intersection(group)]
    if not columns:
        columns = sorted(keys)[:4]
    chosen = samples if len(samples) <= 2 * per_end else samples[:per_end] + samples[-per_end:]
    def cell(record: dict, column: str) -> str:
        value = record.get(column)
        if isinstance(value, float):
            return f"{value:+.3f}"
        return display(value, keep_end=column in ("prompt", "query"), limit=80)

    rows = [[cell(record, c) for c in columns] for record in chosen]
    text = "Completions sampled during PPO training, first and last."
    return [Section("PPO samples over training", [Text(text), Table(columns, rows)])]


def settings_section(info: dict) -> list[Section]:
    blocks = []
    stages = info.get("stages") or []
    if stages:
        rows = [
            [
                STEP_TITLES.get(entry["name"], entry["name"]),
                entry.get("status", "-"),
                f"{entry['wall_time_s']:.1f} s" if entry.get("wall_time_s") is not None else "-",
                str(entry.get("output_dir", "-")),
            ]
            for entry in stages
        ]
        total = info.get("total_wall_time_s")
        if total is not None:
            rows.append(["total", "", f"{total:.1f} s", ""])
        blocks.append(Table(["stage", "status", "wall time", "output"], rows, "Wall time per stage"))
    if info.get("versions"):
        rows = [[name, version] for name, version in info["versions"].items()]
        blocks.append(Table(["library", "version"], rows, "Library versions"))
    if info.get("machine"):
        blocks.append(Text(f"Machine: {info['machine']}"))
    if info.get("command"):
        blocks.append(Text("Command:"))
        blocks.append(Preformatted(info["command"]))
    if info.get("stage_commands"):
        blocks.append(Text("Each training stage alone, with the configuration this run used:"))
        blocks.append(Preformatted("\n".join(info["stage_commands"].values())))
    if info.get("config"):
        blocks.append(Text("Pipeline settings:"))
        blocks.append(Preformatted(yaml.safe_dump(info["config"], sort_keys=False, allow_unicode=True).rstrip()))
    return [Section("Run settings", blocks, collapsed=True)] if blocks else []
