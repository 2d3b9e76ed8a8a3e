"""`rlhf-recipes pipeline --config PIPELINE.yaml`: every stage of InstructGPT in order, in one process.

Steps: [data (a task's files)] -> [pretrain (stage 0, optional)] -> sft -> reward -> select ->
ppo -> evaluate, then the report. Each training stage is the package's own stage function run
with a config file the pipeline writes to `output_dir/configs/<stage>.yaml` (`stages.py`); the
same file runs that stage alone (`rlhf-recipes sft --config output_dir/configs/sft.yaml`).

The pipeline YAML:
    output_dir: runs/x          # run directory; each step writes inside it (artifacts/run_dir.py)
    seed: 0                     # the seed of the task data and of every stage
    title: ...                  # report title (optional)
    torch_threads: 1            # torch intra-op threads (optional; 1 is fastest for tiny models on a busy CPU)
    task: {provider: module:Class, ...}   # optional task provider (tasks.py): writes data, sets each
                                # step's data fields, may bring a gold metric; the demo is one
    model: {...}                # ModelArguments fields; model_name_or_path, tokenizer_name_or_path and
                                # model_config_overrides apply to the first stage only, the rest to all
    stages:
      pretrain: {...}           # optional stage 0: LM training on a corpus
      sft: {config: sft.yaml, ...}   # a stage's fields, inline and/or from a stage YAML (relative to this file)
      reward: {...}
      ppo: {...}
    selection: {num_prompts, max_new_tokens, max_prompt_length, dataset_name, data_split}
                                # SFT checkpoint choice by RM score (selection.py)
    evaluation: {num_prompts, max_new_tokens, max_prompt_length, num_examples, dataset_name, data_split,
                 probe_prompts}  # held-out comparison (evaluation.py); prompts: the PPO part of
                                # data_split, default "0,0,1" = the whole file; a task sets both files;
                                # probe_prompts: fixed prompts every policy answers greedily (probes.json)

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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from ..artifacts.run_dir import (
    DATA_DIR,
    PROBES,
    RUN_INFO,
    STEP_TITLES,
    TRAINING_STAGES,
    read_json,
    stage_config,
    step_marker,
    step_output,
    write_json,
)
from ..config.parsing import ConfigError
from .evaluation import evaluate_stages
from .resolve import Resolver
from .selection import select_sft_checkpoint
from .spec import PipelineSpec, load_spec
from .stages import STAGE_COMMANDS, STAGE_RUNNERS
from .tasks import TaskProvider

LIBRARIES = ("rlhf-recipes", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers")


def _write_data(spec: PipelineSpec, settings: dict, task: TaskProvider) -> None:
    task.write_data(spec.run_dir / DATA_DIR, settings["seed"])


def _select(spec: PipelineSpec, settings: dict, task: TaskProvider | None) -> dict:
    return select_sft_checkpoint(settings, task)


def _evaluate(spec: PipelineSpec, settings: dict, task: TaskProvider | None) -> dict:
    return evaluate_stages(settings, task, spec.seed, probes_path=spec.run_dir / PROBES)


# Steps that are not training stages -> function(spec, settings, task) returning a JSON result or None;
# tests replace entries.
STEP_RUNNERS: dict[str, Callable[[PipelineSpec, dict, TaskProvider | None], dict | None]] = {
    "data": _write_data,
    "select": _select,
    "evaluate": _evaluate,
}


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


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
        self.task = spec.task_provider
        self.resolver = Resolver(spec)
        self.records: list[StepRecord] = []
        self.force = overwrite
        self.steps = [*(["data"] if self.task is not None else []), *[s for s in TRAINING_STAGES if s in spec.stages]]
        self.steps[self.steps.index("ppo") : self.steps.index("ppo")] = ["select"]
        self.steps.append("evaluate")

    def _announce(self, number: int, name: str, target: Path) -> None:
        print(f"\n==> [{number}/{len(self.steps) + 1}] {STEP_TITLES[name]}  ({target})", flush=True)

    def _run_step(self, number: int, name: str, settings: dict, action: Callable[[], dict | None]) -> dict:
        """Skip a finished step or run it; returns its marker content."""
        run_dir = self.spec.run_dir
        marker_path, output = step_marker(run_dir, name), step_output(run_dir, name)
        self._announce(number, name, output)
        marker = read_json(marker_path)
        if not self.force and marker is not None and _same(marker.get("pipeline_settings"), settings):
            print(f"    finished in an earlier run ({marker['wall_time_s']:.1f} s): skipped (--overwrite reruns it)")
            self.records.append(StepRecord(name, str(output.relative_to(run_dir)), "skipped", marker["wall_time_s"]))
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
        write_json(marker_path, marker)
        print(f"    done in {elapsed:.1f} s", flush=True)
        self.records.append(StepRecord(name, str(output.relative_to(run_dir)), "ran", elapsed))
        return marker

    def _step(self, name: str, selection: dict | None) -> tuple[dict, Callable[[], dict | None]]:
        """The step's resolved settings and the call that runs it; a training stage's settings are
        written to configs/<stage>.yaml first."""
        if name in TRAINING_STAGES:
            settings = self.resolver.stage_settings(name, selection)
            config_path = stage_config(self.spec.run_dir, name)
            config_path.parent.mkdir(parents=True, exist_ok=True)
            with open(config_path, "w", encoding="utf-8") as handle:
                yaml.safe_dump(settings, handle, sort_keys=False, allow_unicode=True)
            return settings, lambda: STAGE_RUNNERS[name](str(config_path))
        settings = {
            "data": self.resolver.data_settings,
            "select": self.resolver.select_settings,
            "evaluate": lambda: self.resolver.evaluate_settings(selection),
        }[name]()
        return settings, lambda: STEP_RUNNERS[name](self.spec, settings, self.task)

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
            settings, action = self._step(name, selection)
            marker = self._run_step(number, name, settings, action)
            if name == "select":
                selection = marker
        self._announce(len(self.steps) + 1, "report", run_dir)
        self._write_run_info(time.perf_counter() - started)
        return run_dir

    def _write_run_info(self, total: float) -> None:
        stage_commands = {
            stage: f"{command} --config {stage_config(self.spec.run_dir, stage)}"
            for stage, command in STAGE_COMMANDS.items()
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
        write_json(self.spec.run_dir / RUN_INFO, info)


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
