"""`rlhf-recipes report RUN_DIR`: build report.html, report.md and the plot PNGs of a run from
the files in its run directory alone (see `run_dir.py`), and print the one-screen summary."""

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .plots import (
    PPO_PANELS,
    constant_series,
    plot_alignment_tax,
    plot_lm_loss,
    plot_ppo,
    plot_reward,
    plot_stage_bars,
)
from .render import Section, render_html, render_markdown, render_text_table
from ..artifacts.run_dir import (
    PLOTS_DIR,
    REPORT_HTML,
    REPORT_MD,
    STEP_TITLES,
    RunArtifacts,
    load_run,
    stage_config,
)
from .sections import (
    GENERIC_COLUMNS,
    GOLD_COLUMNS,
    STAGE_LABELS,
    TAX_HEADLINE,
    alignment_tax_section,
    curves_section,
    lm_loss_stages,
    metrics_section,
    ppo_samples_section,
    probes_section,
    reward_section,
    selection_section,
    settings_section,
    side_by_side_section,
    stage_metrics_table,
    verdict,
)

# The bar chart shows the table's percentage columns, with the table's labels.
BAR_METRICS = {
    gold: {label: key for label, key, kind in columns if kind == "pct"}
    for gold, columns in ((True, GOLD_COLUMNS), (False, GENERIC_COLUMNS))
}


@dataclass
class BuiltReport:
    html: Path
    markdown: Path
    plots: dict[str, str | None]


def _draw_plots(run: RunArtifacts) -> dict[str, str | None]:
    """Write every plot the run has data for; stage -> path relative to the run dir (None: no data)."""
    plots_dir = run.run_dir / PLOTS_DIR
    plots_dir.mkdir(exist_ok=True)

    def target(name: str) -> str:
        return str(plots_dir / name)

    drawn = {
        "pretrain": plot_lm_loss(run.log_histories.get("pretrain", []), target("pretrain.png"), STEP_TITLES["pretrain"]),
        "sft": plot_lm_loss(run.log_histories.get("sft", []), target("sft.png"), STEP_TITLES["sft"]),
        "reward": plot_reward(run.log_histories.get("reward", []), target("reward.png")),
        "ppo": plot_ppo(run.ppo_log, target("ppo.png")),
    }
    if run.evaluation and run.evaluation.get("stages"):
        gold = bool(run.evaluation.get("gold"))
        title = "Held-out metrics by stage"
        values = {STAGE_LABELS.get(stage, stage): m for stage, m in run.evaluation["stages"].items()}
        drawn["metrics"] = plot_stage_bars(values, BAR_METRICS[gold], target("metrics.png"), title)
        key, ylabel, scale = TAX_HEADLINE[gold]
        points = {STAGE_LABELS.get(stage, stage): (m["lm_loss"], scale * m.get(key, float("nan")))
                  for stage, m in lm_loss_stages(run.evaluation).items()}
        drawn["alignment_tax"] = plot_alignment_tax(points, ylabel, target("alignment_tax.png"),
                                                    "Alignment tax: held-out LM loss against what each stage bought",
                                                    percent=scale == 100.0)
    return {stage: (f"{PLOTS_DIR}/{Path(path).name}" if path else None) for stage, path in drawn.items()}


def _ptx_coef(run: RunArtifacts) -> float | None:
    """PPO's ptx_coef as this run's PPO stage read it (configs/ppo.yaml); None when unknown."""
    path = stage_config(run.run_dir, "ppo")
    if not path.is_file():
        return None
    value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("ptx_coef", 0.0)
    return float(value) if isinstance(value, int | float) else None


def _sections(run: RunArtifacts, plots: dict[str, str | None]) -> list[Section]:
    curves = {stage: plots.get(stage) for stage in ("pretrain", "sft", "ppo")}
    ppo_keys = tuple(key for _, keys in PPO_PANELS.values() for key in keys)
    return [
        *metrics_section(run.evaluation, plots.get("metrics")),
        *alignment_tax_section(run.evaluation, plots.get("alignment_tax"), _ptx_coef(run)),
        *side_by_side_section(run.evaluation),
        *probes_section(run.probes),
        *reward_section(run, plots.get("reward")),
        *selection_section(run.selection),
        *curves_section(curves, constant_series(run.ppo_log, ppo_keys)),
        *ppo_samples_section(run.ppo_samples),
        *settings_section(run.info),
    ]


def build_report(run_dir: str | Path) -> BuiltReport:
    """Write `report.html`, `report.md` and `plots/*.png` into `run_dir`; returns their paths."""
    run = load_run(run_dir)
    plots = _draw_plots(run)
    title = run.info.get("title") or f"RLHF run report: {run.run_dir.name}"
    lead, sections = verdict(run.evaluation), _sections(run, plots)
    html_path, md_path = run.run_dir / REPORT_HTML, run.run_dir / REPORT_MD
    html_path.write_text(render_html(title, lead, sections, run.run_dir), encoding="utf-8")
    md_path.write_text(render_markdown(title, lead, sections), encoding="utf-8")
    return BuiltReport(html=html_path, markdown=md_path, plots=plots)


def format_summary(run_dir: str | Path, report: BuiltReport | None = None) -> str:
    """The end-of-run screen: wall time per stage, the metrics table, the SFT choice, the RM check,
    where the report is."""
    run = load_run(run_dir)
    lines = []
    stages = run.info.get("stages") or []
    if stages:
        times = ", ".join(
            f"{entry['name']} {entry['wall_time_s']:.0f}s" + (" (skipped)" if entry.get("status") == "skipped" else "")
            for entry in stages
            if entry.get("wall_time_s") is not None
        )
        total = run.info.get("total_wall_time_s")
        lines.append(f"Finished{f' in {total:.0f} s' if total is not None else ''}: {times}")
    evaluation = run.evaluation or {}
    if evaluation.get("stages"):
        lines += ["", f"Held-out prompts: {evaluation.get('num_prompts', '?')} (never seen in training)"]
        lines.append(render_text_table(stage_metrics_table(evaluation)))
        losses = ", ".join(f"{STAGE_LABELS.get(s, s)} {m['lm_loss']:.3f}" for s, m in lm_loss_stages(evaluation).items())
        if losses:
            lines.append(f"Held-out LM loss (nats/token, the alignment tax): {losses}")
    if run.selection:
        selection = run.selection
        lines.append(
            f"\nPPO started from {selection['chosen']} (best mean RM score of {len(selection['candidates'])} SFT checkpoints)."
        )
    if run.rm_eval:
        ranked = evaluation.get("rm_ranked_first")
        extra = f", correct answer ranked first {100 * ranked:.1f}%" if ranked is not None else ""
        lines.append(f"Reward model: held-out pair accuracy {100 * run.rm_eval['accuracy']:.1f}%{extra}.")
    headline = verdict(run.evaluation)
    if headline:
        lines += ["", headline]
    report = report or BuiltReport(run.run_dir / REPORT_HTML, run.run_dir / REPORT_MD, {})
    lines += ["", f"Report: {report.html}  (also {report.markdown.name}, plots in {run.run_dir / PLOTS_DIR})"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf-recipes report", description=__doc__)
    parser.add_argument("run_dir", help="A pipeline or demo output directory.")
    args = parser.parse_args(argv)
    try:
        built = build_report(args.run_dir)
    except FileNotFoundError as err:
        parser.exit(2, f"rlhf-recipes report: {err}\n")
    print(format_summary(args.run_dir, built))
    return 0
