"""`rlhf-recipes pipeline --config PIPELINE.yaml`: every stage of InstructGPT in order, in one process.

Steps: [data (demo task only)] -> [pretrain (stage 0, optional)] -> sft -> reward -> select ->
ppo -> evaluate, then the report. Each training stage is the package's own stage function
(`run_sft`, `run_reward`, `run_ppo`) called with a config file the pipeline writes to
`output_dir/configs/<stage>.yaml`; the same file runs that stage alone
(`rlhf-recipes sft --config output_dir/configs/sft.yaml`).

The pipeline YAML:
    output_dir: runs/x          # run directory; each step writes inside it
    seed: 0                     # the seed of the task data and of every stage
    title: ...                  # report title (optional)
    torch_threads: 1            # torch intra-op threads (optional; 1 is fastest for tiny models on a busy CPU)
    demo_task: {...}            # optional: generate the checkable demo task (`demo.task.TaskSettings` fields);
                                # the pipeline then sets every dataset path itself
    model: {...}                # ModelArguments fields; model_name_or_path, tokenizer_name_or_path and
                                # model_config_overrides apply to the first stage only, the rest to all
    stages:
      pretrain: {...}           # optional stage 0: LM training on the corpus (demo task)
      sft: {config: sft.yaml, ...}   # a stage's fields, inline and/or from a stage YAML (relative to this file)
      reward: {...}
      ppo: {...}
    selection: {num_prompts, max_new_tokens, dataset_name, data_split}   # SFT checkpoint choice by RM score
    evaluation: {num_prompts, max_new_tokens, num_examples, dataset_name, data_split}  # held-out comparison
                                # (prompts: the PPO part of data_split, default "0,0,1" = the whole file;
                                # the demo task sets both files itself)

Model flow: sft starts from pretrain's output (or `model`), the reward model from the final SFT
model, then every SFT checkpoint is scored by the RM on validation prompts and the best one is
PPO's starting policy and reference; the critic starts from the RM.

A step is finished when its completion marker exists (written last: `pipeline_done.json` in a
stage's output directory; selection.json / evaluation.json themselves) and records the same
settings as now. Finished steps are skipped on a re-run; a step that runs makes every later
step run too; `--overwrite` reruns everything. A step's old output is removed before it runs.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path

import yaml

from ..config.parsing import ConfigError, parse_args

MARKER = "pipeline_done.json"
CONFIGS_DIR = "configs"
TRAINING_STAGES = ("pretrain", "sft", "reward", "ppo")
FIRST_STAGE_MODEL_KEYS = ("model_name_or_path", "tokenizer_name_or_path", "model_config_overrides")
LIBRARIES = ("rlhf-recipes", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers")
STEP_TITLES = {
    "data": "Demo task data",
    "pretrain": "Stage 0: pretraining",
    "sft": "Step 1: SFT",
    "reward": "Step 2: reward model",
    "select": "SFT checkpoint selection",
    "ppo": "Step 3: PPO-ptx",
    "evaluate": "Evaluation on held-out prompts",
    "report": "Report",
}


@dataclass
class PipelineSpec:
    """A pipeline YAML, validated (see the module docstring for the fields)."""

    output_dir: str
    seed: int = 0
    title: str | None = None
    torch_threads: int | None = None
    demo_task: dict | None = None
    model: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    base_dir: str = "."

    def __post_init__(self):
        unknown = set(self.stages) - set(TRAINING_STAGES)
        if unknown:
            raise ConfigError(f"Unknown stage(s) {sorted(unknown)} in 'stages'; valid: {', '.join(TRAINING_STAGES)}.")
        for required in ("sft", "reward", "ppo"):
            if required not in self.stages:
                raise ConfigError(f"The pipeline needs a '{required}' stage under 'stages'.")
        if "pretrain" in self.stages and self.demo_task is None:
            raise ConfigError("Stage 0 (pretrain) trains on the demo task's corpus: it needs 'demo_task'.")
        if self.demo_task is None:
            for section in ("selection", "evaluation"):
                if not getattr(self, section).get("dataset_name"):
                    raise ConfigError(f"Without demo_task, '{section}' needs a dataset_name (its prompts).")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "base_dir"}


def load_spec(path: str, overrides: dict | None = None) -> PipelineSpec:
    """Read a pipeline YAML; `overrides` (output_dir, seed) win over the file."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a YAML mapping.")
    return spec_from_dict(raw, base_dir=os.path.dirname(os.path.abspath(path)), overrides=overrides)


def spec_from_dict(raw: dict, base_dir: str = ".", overrides: dict | None = None) -> PipelineSpec:
    valid = {f.name for f in fields(PipelineSpec)} - {"base_dir"}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ConfigError(f"Unknown pipeline key(s) {unknown}; valid keys: {', '.join(sorted(valid))}.")
    raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    if "output_dir" not in raw:
        raise ConfigError("The pipeline needs an output_dir.")
    return PipelineSpec(**raw, base_dir=base_dir)


# ----------------------------------------------------------------------------------- stages


def _run_pretrain(config: str) -> None:
    """Stage 0: causal-LM training on prompt + completion texts (SFT stage code, plain-text rows)."""
    from datasets import Dataset
    from trl import SFTConfig

    from ..data import DataArguments, load_stage_dataset
    from ..models import ModelArguments
    from ..stages.sft import train_sft

    model_args, data_args, training_args = parse_args([ModelArguments, DataArguments, SFTConfig], ["--config", config])
    rows = load_stage_dataset(data_args, "sft")["train"]
    texts = Dataset.from_dict({"text": [p + c for p, c in zip(rows["prompt"], rows["completion"], strict=True)]})
    train_sft(model_args, training_args, texts)


def _run_sft(config: str) -> None:
    from ..stages.sft import main

    main(["--config", config])


def _run_reward(config: str) -> None:
    from ..stages.reward import main

    main(["--config", config])


def _run_ppo(config: str) -> None:
    from ..ppo.run import main

    main(["--config", config])


# Training stage -> function running it from its config file; tests replace entries.
STAGE_RUNNERS: dict[str, Callable[[str], None]] = {
    "pretrain": _run_pretrain,
    "sft": _run_sft,
    "reward": _run_reward,
    "ppo": _run_ppo,
}
STAGE_COMMANDS = {"sft": "rlhf-recipes sft", "reward": "rlhf-recipes reward", "ppo": "rlhf-recipes ppo"}


def _select(spec: PipelineSpec, settings: dict) -> dict:
    from ..demo.evaluation import load_prompts, select_sft_checkpoint

    prompts = load_prompts(settings["dataset_name"], settings["num_prompts"], settings["data_split"])
    return select_sft_checkpoint(
        Path(settings["sft_dir"]), Path(settings["reward_dir"]), prompts, settings["gold"],
        settings["max_new_tokens"], settings.get("max_prompt_length"),
    )


def _evaluate(spec: PipelineSpec, settings: dict) -> dict:
    from ..demo.evaluation import evaluate_stages, load_prompts

    prompts = load_prompts(settings["dataset_name"], settings["num_prompts"], settings["data_split"])
    return evaluate_stages(
        settings["policies"], settings["reward_dir"], settings["reference_dir"], prompts, settings["gold"],
        spec.seed, settings["max_new_tokens"], settings["num_examples"], settings.get("max_prompt_length"),
    )


def _write_data(spec: PipelineSpec, settings: dict) -> None:
    from ..demo.files import write_task_files
    from ..demo.task import TaskSettings

    task = dict(settings["demo_task"])
    if "data_split" in task:
        task["data_split"] = tuple(task["data_split"])
    write_task_files(spec.run_dir / "data", settings["seed"], TaskSettings(**task))


# Steps that are not training stages -> function(spec, settings) returning a JSON result or None.
STEP_RUNNERS: dict[str, Callable[[PipelineSpec, dict], dict | None]] = {
    "data": _write_data,
    "select": _select,
    "evaluate": _evaluate,
}


# ------------------------------------------------------------------------ resolving settings


def _stage_fields(spec: PipelineSpec, stage: str) -> dict:
    """A stage's own fields: its `config:` file (relative to the pipeline YAML), then inline ones."""
    section = dict(spec.stages.get(stage) or {})
    merged = {}
    if "config" in section:
        path = os.path.join(spec.base_dir, section.pop("config"))
        with open(path, encoding="utf-8") as handle:
            merged.update(yaml.safe_load(handle) or {})
    merged.update(section)
    return merged


class Resolver:
    """The settings of each step, given the spec and the outputs of the steps before it."""

    def __init__(self, spec: PipelineSpec):
        self.spec = spec
        self.run_dir = spec.run_dir
        self.data_dir = self.run_dir / "data"
        self.first_stage = "pretrain" if "pretrain" in spec.stages else "sft"

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def _demo_file(self, name: str) -> str:
        from ..demo.files import FILES

        return str(self.data_dir / FILES[name])

    def stage_settings(self, stage: str, selection: dict | None) -> dict:
        model = dict(self.spec.model)
        if stage != self.first_stage:
            model = {k: v for k, v in model.items() if k not in FIRST_STAGE_MODEL_KEYS}
        settings = {**model, **_stage_fields(self.spec, stage)}
        settings.update(output_dir=str(self.stage_dir(stage)), seed=self.spec.seed)
        if stage == "sft" and self.first_stage == "pretrain":
            settings["model_name_or_path"] = str(self.stage_dir("pretrain"))
        if stage == "reward":
            settings["model_name_or_path"] = str(self.stage_dir("sft"))
        if stage == "ppo":
            settings.update(sft_model_path=selection["chosen_path"], reward_model_path=str(self.stage_dir("reward")))
            settings.pop("model_name_or_path", None)
        if self.spec.demo_task is not None:
            settings.update(self._demo_data(stage))
        return settings

    def _demo_data(self, stage: str) -> dict:
        from ..demo.files import TOKENIZER_DIR

        if stage == "pretrain":
            return {"dataset_name": self._demo_file("corpus"), "data_split": "1,0,0",
                    "tokenizer_name_or_path": str(self.data_dir / TOKENIZER_DIR)}
        if stage == "sft":
            extra = {} if self.first_stage == "pretrain" else {"tokenizer_name_or_path": str(self.data_dir / TOKENIZER_DIR)}
            return {"dataset_name": self._demo_file("sft"), "data_split": "1,0,0", **extra}
        if stage == "reward":
            return {"dataset_name": self._demo_file("pairs"), "data_split": "0,1,0"}
        # PPO reads the prompts' "ppo" part and the ptx texts' "sft" part under one data_split.
        return {"dataset_name": self._demo_file("prompts"), "ptx_dataset_name": self._demo_file("corpus"),
                "data_split": "1,0,1"}

    def select_settings(self) -> dict:
        section = dict(self.spec.selection)
        if self.spec.demo_task is not None:
            section["dataset_name"] = self._demo_file("validation")
        return {"num_prompts": 200, "max_new_tokens": 8, "data_split": "0,0,1", **section,
                "gold": self.spec.demo_task is not None,
                "sft_dir": str(self.stage_dir("sft")), "reward_dir": str(self.stage_dir("reward"))}

    def evaluate_settings(self, selection: dict) -> dict:
        section = dict(self.spec.evaluation)
        if self.spec.demo_task is not None:
            section["dataset_name"] = self._demo_file("heldout")
        policies = {}
        if "pretrain" in self.spec.stages:
            policies["pretrained"] = str(self.stage_dir("pretrain"))
        policies.update(sft=selection["chosen_path"], ppo=str(self.stage_dir("ppo")))
        return {"num_prompts": 200, "max_new_tokens": 8, "num_examples": 12, "data_split": "0,0,1", **section,
                "gold": self.spec.demo_task is not None, "policies": policies, "reference_dir": selection["chosen_path"],
                "reward_dir": str(self.stage_dir("reward"))}


# --------------------------------------------------------------------------------- running


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _read(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _machine(threads: int | None) -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.platform()}, {os.cpu_count()} CPU cores, torch threads {threads or torch.get_num_threads()}, {device}"


@dataclass
class StepRecord:
    """What happened to one step in this run, for run_info.json and the report."""

    name: str
    output_dir: str
    status: str
    wall_time_s: float


class Pipeline:
    """Runs the steps of a spec in order with skip-if-finished, and records what happened."""

    def __init__(self, spec: PipelineSpec, overwrite: bool = False, command: str | None = None):
        self.spec, self.command = spec, command
        self.resolver = Resolver(spec)
        self.records: list[StepRecord] = []
        self.force = overwrite
        self.steps = [*(["data"] if spec.demo_task is not None else []), *[s for s in TRAINING_STAGES if s in spec.stages]]
        self.steps[self.steps.index("ppo") : self.steps.index("ppo")] = ["select"]
        self.steps.append("evaluate")

    def _announce(self, number: int, name: str, target: Path) -> None:
        print(f"\n==> [{number}/{len(self.steps) + 1}] {STEP_TITLES[name]}  ({target})", flush=True)

    def _marker(self, name: str) -> Path:
        run_dir = self.spec.run_dir
        return {"select": run_dir / "selection.json", "evaluate": run_dir / "evaluation.json"}.get(
            name, run_dir / name / MARKER
        )

    def _output(self, name: str) -> Path:
        return self._marker(name) if name in ("select", "evaluate") else self.spec.run_dir / name

    def _run_step(self, number: int, name: str, settings: dict, action: Callable[[], dict | None]) -> dict:
        """Skip a finished step or run it; returns its marker content."""
        marker_path, output = self._marker(name), self._output(name)
        self._announce(number, name, output)
        marker = _read(marker_path)
        if not self.force and marker is not None and _same(marker.get("pipeline_settings"), settings):
            print(f"    finished in an earlier run ({marker['wall_time_s']:.1f} s): skipped (--overwrite reruns it)")
            self.records.append(StepRecord(name, str(output.relative_to(self.spec.run_dir)), "skipped", marker["wall_time_s"]))
            return marker
        if marker is not None and not self.force:
            print("    its settings changed since it finished: running it again")
        self.force = True
        if output.is_dir():
            shutil.rmtree(output)
        elif output.exists():
            output.unlink()
        started = time.perf_counter()
        result = action() or {}
        elapsed = time.perf_counter() - started
        marker = {**result, "step": name, "pipeline_settings": settings, "wall_time_s": elapsed,
                  "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_atomic(marker_path, marker)
        print(f"    done in {elapsed:.1f} s", flush=True)
        self.records.append(StepRecord(name, str(output.relative_to(self.spec.run_dir)), "ran", elapsed))
        return marker

    def _training_stage(self, stage: str, selection: dict | None) -> tuple[dict, Callable[[], None]]:
        """The stage's resolved settings, written to configs/<stage>.yaml, and the call that runs it."""
        settings = self.resolver.stage_settings(stage, selection)
        config_path = self.spec.run_dir / CONFIGS_DIR / f"{stage}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        with open(config_path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(settings, handle, sort_keys=False, allow_unicode=True)
        return settings, lambda: STAGE_RUNNERS[stage](str(config_path))

    def run(self) -> Path:
        """Run (or skip) every step and write run_info.json; returns the run directory."""
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                "The pipeline orchestrates its steps in one process. For several processes, run each stage with its "
                "own command and the config files the pipeline writes to output_dir/configs/."
            )
        if self.spec.torch_threads:
            import torch

            torch.set_num_threads(self.spec.torch_threads)
        run_dir = self.spec.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        selection = None
        for number, name in enumerate(self.steps, start=1):
            if name == "data":
                settings = {"seed": self.spec.seed, "demo_task": self.spec.demo_task}
                self._run_step(number, name, settings, lambda s=settings: STEP_RUNNERS["data"](self.spec, s))
            elif name in TRAINING_STAGES:
                settings, action = self._training_stage(name, selection)
                self._run_step(number, name, settings, action)
            elif name == "select":
                settings = self.resolver.select_settings()
                selection = self._run_step(number, name, settings, lambda s=settings: STEP_RUNNERS["select"](self.spec, s))
            else:
                settings = self.resolver.evaluate_settings(selection)
                self._run_step(number, name, settings, lambda s=settings: STEP_RUNNERS["evaluate"](self.spec, s))
        self._announce(len(self.steps) + 1, "report", run_dir)
        self._write_run_info(time.perf_counter() - started)
        return run_dir

    def _write_run_info(self, total: float) -> None:
        stage_commands = {
            stage: f"{STAGE_COMMANDS[stage]} --config {self.spec.run_dir / CONFIGS_DIR / f'{stage}.yaml'}"
            for stage in STAGE_COMMANDS
        }
        info = {
            "title": self.spec.title,
            "config": self.spec.as_dict(),
            "versions": _versions(),
            "machine": _machine(self.spec.torch_threads),
            "command": self.command,
            "stage_commands": stage_commands,
            "stages": [vars(record) for record in self.records],
            "total_wall_time_s": total,
        }
        _write_atomic(self.spec.run_dir / "run_info.json", info)


def run_pipeline(spec: PipelineSpec, overwrite: bool = False, command: str | None = None) -> Path:
    """Run the pipeline, build the report, print the one-screen summary; returns the run directory."""
    from ..report import build_report, format_summary

    run_dir = Pipeline(spec, overwrite, command).run()
    built = build_report(run_dir)
    print("\n" + format_summary(run_dir, built), flush=True)
    return run_dir


def quiet_library_progress_bars() -> None:
    """Keep the terminal to one progress bar per stage: no bars for dataset maps and weight loading."""
    import datasets
    from transformers.utils import logging

    datasets.disable_progress_bars()
    logging.disable_progress_bar()


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", help="Run directory (overrides the YAML's output_dir).")
    parser.add_argument("--seed", type=int, help="Seed of the task data and every stage (overrides the YAML).")
    parser.add_argument("--overwrite", action="store_true", help="Rerun every step, even finished ones.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf-recipes pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="Pipeline YAML (e.g. recipes/tiny/pipeline.yaml).")
    add_run_options(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    spec = load_spec(args.config, {"output_dir": args.output_dir, "seed": args.seed})
    quiet_library_progress_bars()
    run_pipeline(spec, args.overwrite, command="rlhf-recipes pipeline " + " ".join(argv))
    return 0
