"""The run directory: the name of every file a run or a stage writes, every step's name and title,
the one way to read and write its JSON files, and reading a whole run back for the report.

A pipeline run (`output_dir`) holds:

    run_info.json          settings, library versions, each step's output directory and wall time
    configs/<stage>.yaml   each training stage's resolved config (reruns that stage alone)
    data/                  the task's files, when a task provider writes them (the demo does)
    <stage>/               pretrain, sft, reward, ppo: the stage's output_dir, holding
        pipeline_done.json   the pipeline's completion marker (written last)
        README.md            the model card
        trainer_state.json   the trainer's state and log history (HF Trainer; the PPO trainer too)
        train_results.json   HF `Trainer.save_metrics("train", ...)`
        data_order.jsonl     SFT / reward model: the samples of each optimizer step
        eval_rm.json         reward model: the evaluation on held-out pairs
        ppo_log.jsonl        PPO: one record per update
        samples.jsonl        PPO: sampled completions with their scores
    selection.json         the SFT checkpoints' RM scores and the one chosen
    evaluation.json        per-stage metrics on held-out prompts, side-by-side answers
    probes.json            the pipeline's fixed probe prompts, answered greedily by each policy (when set)
    report.html, report.md, plots/

The report is built from these files alone. JSON files are written whole or not at all (a temporary
file, then `os.replace`); JSON Lines logs are appended one record per line, so a kill can cut off
only their last line, which every reader here ignores.
"""

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RUN_INFO = "run_info.json"
CONFIGS_DIR = "configs"
DATA_DIR = "data"
STEP_MARKER = "pipeline_done.json"
SELECTION = "selection.json"
EVALUATION = "evaluation.json"
PROBES = "probes.json"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
PLOTS_DIR = "plots"
MODEL_CARD = "README.md"
TRAINER_STATE = "trainer_state.json"  # the HF Trainer's name, kept by the PPO trainer
TRAIN_RESULTS = "train_results.json"  # written by HF `Trainer.save_metrics("train", ...)`
DATA_ORDER = "data_order.jsonl"
RM_EVAL = "eval_rm.json"
PPO_LOG = "ppo_log.jsonl"
PPO_SAMPLES = "samples.jsonl"

TRAINING_STAGES = ("pretrain", "sft", "reward", "ppo")
STEP_TITLES = {
    "data": "Task data",
    "pretrain": "Stage 0: pretraining",
    "sft": "Step 1: SFT",
    "reward": "Step 2: reward model",
    "select": "SFT checkpoint selection",
    "ppo": "Step 3: PPO",
    "evaluate": "Evaluation on held-out prompts",
    "report": "Report",
}
# What a model card says the stage is.
STAGE_DESCRIPTIONS = {
    "sft": "step 1, supervised fine-tuning (SFT)",
    "reward": "step 2, reward model",
    "ppo": "step 3, PPO against the reward model",
}
# Steps whose output is one JSON file in the run directory, which is also their completion marker.
STEP_FILES = {"select": SELECTION, "evaluate": EVALUATION}


def step_output(run_dir: Path, step: str) -> Path:
    """Where a pipeline step writes: its JSON file, else its directory named after it."""
    return run_dir / STEP_FILES.get(step, step)


def step_marker(run_dir: Path, step: str) -> Path:
    """The file whose presence says a pipeline step finished: its JSON file, else its directory's marker."""
    return run_dir / STEP_FILES[step] if step in STEP_FILES else run_dir / step / STEP_MARKER


def stage_config(run_dir: Path, stage: str) -> Path:
    """The config file the pipeline writes for a training stage."""
    return run_dir / CONFIGS_DIR / f"{stage}.yaml"


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _replace_with(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file next to it, then `os.replace`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    """Write `data` as indented JSON, atomically."""
    _replace_with(path, json.dumps(data, ensure_ascii=False, indent=2))


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON Lines file ([] when missing).

    A cut-off last line (a kill during an append) is ignored; an unreadable line before it is
    an error, since no kill leaves one there.
    """
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines) - 1:
                raise
    return records


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Write `records` one per line, atomically."""
    _replace_with(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def append_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Append `records` one per line (a log written as training goes)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


@dataclass
class RunArtifacts:
    """Everything the report shows, as read from one run directory (absent parts are empty)."""

    run_dir: Path
    info: dict = field(default_factory=dict)
    evaluation: dict | None = None
    selection: dict | None = None
    log_histories: dict[str, list[dict]] = field(default_factory=dict)
    rm_eval: dict | None = None
    ppo_log: list[dict] = field(default_factory=list)
    ppo_samples: list[dict] = field(default_factory=list)
    probes: dict | None = None

    def stage_dir(self, stage: str) -> Path:
        """The stage's output directory: from run_info.json, else the directory named after it."""
        for entry in self.info.get("stages", []):
            if entry.get("name") == stage and entry.get("output_dir"):
                return self.run_dir / entry["output_dir"]
        return self.run_dir / stage


def load_run(run_dir: str | Path) -> RunArtifacts:
    """Read a run directory; raises FileNotFoundError when it is not a directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory not found: {run_dir}")
    run = RunArtifacts(run_dir=run_dir, info=read_json(run_dir / RUN_INFO) or {})
    run.evaluation = read_json(run_dir / EVALUATION)
    run.selection = read_json(run_dir / SELECTION)
    run.probes = read_json(run_dir / PROBES)
    for stage in ("pretrain", "sft", "reward"):
        state = read_json(run.stage_dir(stage) / TRAINER_STATE)
        if state and state.get("log_history"):
            run.log_histories[stage] = state["log_history"]
    run.rm_eval = read_json(run.stage_dir("reward") / RM_EVAL)
    run.ppo_log = read_jsonl(run.stage_dir("ppo") / PPO_LOG)
    run.ppo_samples = read_jsonl(run.stage_dir("ppo") / PPO_SAMPLES)
    return run
