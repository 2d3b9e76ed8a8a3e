"""The files a pipeline run leaves in its run directory, and reading them back.

The pipeline writes `run_info.json` (settings, library versions, each stage's output directory
and wall time), `selection.json` (the SFT checkpoints' RM scores and the one chosen) and
`evaluation.json` (per-stage metrics on held-out prompts, side-by-side answers). The stages
write their own logs: HF Trainer's `trainer_state.json` (SFT, reward model, stage-0
pretraining), the reward stage's `eval_rm.json`, and the PPO trainer's `ppo_log.jsonl` and
`samples.jsonl`. The report is built from these files alone.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

RUN_INFO = "run_info.json"
EVALUATION = "evaluation.json"
SELECTION = "selection.json"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
PLOTS_DIR = "plots"
TRAINER_STATE = "trainer_state.json"
RM_EVAL = "eval_rm.json"
PPO_LOG = "ppo_log.jsonl"
PPO_SAMPLES = "samples.jsonl"

# Stage name -> its output directory inside the run directory, unless run_info.json says otherwise.
DEFAULT_STAGE_DIRS = {"pretrain": "pretrain", "sft": "sft", "reward": "reward", "ppo": "ppo"}
STAGE_TITLES = {
    "pretrain": "Stage 0: pretraining",
    "sft": "Step 1: SFT",
    "reward": "Step 2: reward model",
    "select": "SFT checkpoint selection",
    "ppo": "Step 3: PPO",
    "evaluate": "Evaluation",
}


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when the file does not exist."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON Lines file ([] when missing); a cut-off last line is ignored."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines) - 1:
                raise
    return records


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)


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

    def stage_dir(self, stage: str) -> Path:
        """The stage's output directory: from run_info.json, else the default name in the run dir."""
        for entry in self.info.get("stages", []):
            if entry.get("name") == stage and entry.get("output_dir"):
                return self.run_dir / entry["output_dir"]
        return self.run_dir / DEFAULT_STAGE_DIRS.get(stage, stage)


def load_run(run_dir: str | Path) -> RunArtifacts:
    """Read a run directory; raises FileNotFoundError when it is not a directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory not found: {run_dir}")
    run = RunArtifacts(run_dir=run_dir, info=read_json(run_dir / RUN_INFO) or {})
    run.evaluation = read_json(run_dir / EVALUATION)
    run.selection = read_json(run_dir / SELECTION)
    for stage in ("pretrain", "sft", "reward"):
        state = read_json(run.stage_dir(stage) / TRAINER_STATE)
        if state and state.get("log_history"):
            run.log_histories[stage] = state["log_history"]
    run.rm_eval = read_json(run.stage_dir("reward") / RM_EVAL)
    run.ppo_log = read_jsonl(run.stage_dir("ppo") / PPO_LOG)
    run.ppo_samples = read_jsonl(run.stage_dir("ppo") / PPO_SAMPLES)
    return run
