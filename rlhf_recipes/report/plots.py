"""Training curves as PNG files (matplotlib, Agg backend: no display needed).

Inputs are the stages' own logs: HF Trainer `log_history` records (SFT, reward model, stage-0
pretraining) and the PPO trainer's JSONL records. Each plot function draws only the series
that exist and returns None, writing nothing, when none does.
"""

import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Series = tuple[str, list[float], list[float]]

# PPO panels: title -> (y-axis label, candidate log keys), drawn when present.
PPO_PANELS = {
    "Actor (policy) loss": ("clipped surrogate loss", ("loss/policy",)),
    "Critic (value) loss": ("clipped value loss", ("loss/value",)),
    "Pretraining (ptx) LM loss": ("cross-entropy (nats/token)", ("loss/ptx",)),
    "Reward": ("mean per rollout", ("objective/scores", "objective/rlhf_reward")),
    "KL to reference": ("nats per response", ("objective/kl",)),
    "KL coefficient": ("coefficient", ("kl_coef",)),
    "Policy entropy": ("nats per response", ("objective/entropy",)),
}
# Line style and marker per series of a panel, so that overlapping lines stay distinguishable.
STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))
HATCHES = ("", "//", "..", "xx")


@dataclass
class Panel:
    """One subplot: a title and the labelled (x, y) series drawn on it."""

    title: str
    series: list[Series]
    ylabel: str
    xlabel: str = "training step"


def series(records: list[dict], key: str, x_key: str = "step") -> tuple[list[float], list[float]]:
    """(x, y) of `key` over the records that have it as a finite number; x is `x_key` or the row number."""
    xs, ys = [], []
    for index, record in enumerate(records):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(record.get(x_key, index))
            ys.append(float(value))
    return xs, ys


def is_constant(ys: list[float]) -> bool:
    """Several points, all equal: a flat line says less than the value itself."""
    return len(ys) > 1 and max(ys) - min(ys) <= 1e-9 * max(1.0, abs(ys[0]))


def _panel(title: str, ylabel: str, records: list[dict], keys: tuple[str, ...], labels: tuple[str, ...] | None = None,
           xlabel: str = "training step") -> Panel:
    drawn = []
    for key, label in zip(keys, labels or keys):
        xs, ys = series(records, key)
        if ys and not is_constant(ys):
            drawn.append((label, xs, ys))
    return Panel(title, drawn, ylabel, xlabel)


def constant_series(records: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """key -> value for the logged series that never change (not plotted: the report states the value)."""
    constants = {}
    for key in keys:
        ys = series(records, key)[1]
        if is_constant(ys):
            constants[key] = ys[0]
    return constants


def plot_panels(panels: list[Panel], path: str, title: str) -> str | None:
    """Draw the non-empty panels side by side into `path`; None (no file) when all are empty."""
    panels = [panel for panel in panels if panel.series]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, panel in zip(axes.flat, panels):
        for (label, xs, ys), (linestyle, marker) in zip(panel.series, STYLES * len(panel.series)):
            axis.plot(xs, ys, linestyle=linestyle, marker=marker, markevery=max(1, len(xs) // 12), markersize=4,
                      markerfacecolor="none", label=label)
        axis.set_title(panel.title, fontsize=10)
        axis.set_xlabel(panel.xlabel)
        axis.set_ylabel(panel.ylabel)
        axis.grid(alpha=0.3)
        if len(panel.series) > 1:
            axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_lm_loss(log_history: list[dict], path: str, title: str) -> str | None:
    """Language-model loss (train and eval) and token accuracy of an SFT-style stage."""
    panels = [
        _panel("Loss", "cross-entropy (nats/token)", log_history, ("loss", "eval_loss"), ("train", "eval")),
        _panel("Token accuracy", "fraction of next tokens right", log_history,
               ("mean_token_accuracy", "eval_mean_token_accuracy"), ("train", "eval")),
    ]
    return plot_panels(panels, path, title)


def plot_reward(log_history: list[dict], path: str) -> str | None:
    """Reward-model loss, pair accuracy and margin, train and eval."""
    labels = ("train", "eval")
    panels = [
        _panel("Loss", "-log sigmoid(margin)", log_history, ("loss", "eval_loss"), labels),
        _panel("Pair accuracy (chosen > rejected)", "fraction of pairs", log_history, ("accuracy", "eval_accuracy"),
               labels),
        _panel("Margin (chosen - rejected)", "reward difference", log_history, ("margin", "eval_margin"), labels),
    ]
    return plot_panels(panels, path, "Step 2: reward model")


def plot_ppo(records: list[dict], path: str) -> str | None:
    """PPO actor loss, critic loss, ptx loss, reward, KL, KL coefficient and entropy over updates (a series
    that never changes is left out: see `constant_series`)."""
    panels = [_panel(title, ylabel, records, keys, xlabel="PPO update") for title, (ylabel, keys) in PPO_PANELS.items()]
    return plot_panels(panels, path, "Step 3: PPO")


def plot_stage_bars(values: dict[str, dict[str, float]], metrics: dict[str, str], path: str, title: str) -> str | None:
    """Grouped bars: for each metric (label -> key, a fraction), one bar per stage, in percent as in the tables."""
    stages = list(values)
    shown = {label: key for label, key in metrics.items() if any(key in values[s] for s in stages)}
    if not stages or not shown:
        return None
    figure, axis = plt.subplots(figsize=(1.9 * len(shown) * len(stages) / 2 + 3, 3.6))
    width = 0.8 / len(stages)
    for offset, stage in enumerate(stages):
        heights = [100 * values[stage].get(key, float("nan")) for key in shown.values()]
        positions = [i + offset * width for i in range(len(shown))]
        bars = axis.bar(positions, heights, width, label=stage, hatch=HATCHES[offset % len(HATCHES)], edgecolor="white")
        axis.bar_label(bars, fmt="%.1f%%", fontsize=7)
    axis.set_xticks([i + width * (len(stages) - 1) / 2 for i in range(len(shown))], list(shown), fontsize=9)
    axis.set_ylim(0, 105)
    axis.set_ylabel("% of held-out prompts")
    axis.legend(fontsize=8)
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_alignment_tax(points: dict[str, tuple[float, float]], ylabel: str, path: str, title: str,
                       percent: bool = False) -> str | None:
    """One point per stage at (held-out LM loss, headline metric; `percent`: y in %, as in the tables), joined in
    stage order: moving right is the alignment tax, moving up what the stage bought with it. None (no file) with
    fewer than two stages."""
    points = {stage: xy for stage, xy in points.items() if all(isinstance(v, int | float) and math.isfinite(v) for v in xy)}
    if len(points) < 2:
        return None
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    xs, ys = zip(*points.values())
    axis.plot(xs, ys, linestyle=":", color="0.6", zorder=1)
    for (stage, (x, y)), (_, marker) in zip(points.items(), STYLES * len(points)):
        axis.scatter([x], [y], marker=marker, s=60, label=stage, zorder=2)
        value = f"{y:.1f}%" if percent else f"{y:+.3f}"
        axis.annotate(f"{stage}\n{x:.3f} nats/token, {value}", (x, y), textcoords="offset points", xytext=(8, -4),
                      fontsize=8)
    axis.set_xlabel("held-out LM loss (nats/token; lower is better)")
    axis.set_ylabel(ylabel)
    span = max(xs) - min(xs) or 1.0
    axis.set_xlim(min(xs) - 0.1 * span, max(xs) + 0.35 * span)
    if percent:
        axis.set_ylim(-3, 105)
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
