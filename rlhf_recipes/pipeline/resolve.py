"""The settings of each pipeline step, from the spec, the task and the outputs of the steps before it.

Model flow: sft starts from pretrain's output (or `model`), the reward model from the final SFT
model; PPO starts from the SFT checkpoint the selection step chose (also its KL reference), its
critic from the reward model. A stage that trains LoRA with `merge_lora: true` hands on its
`merged/` model (its output_dir holds only the adapter). A task's data fields override a stage's own.
The evaluation also answers with the first stage's starting model ("base") when it is a pretrained
checkpoint with its own tokenizer (not `tiny:`, no tokenizer or config override) and there is no stage 0.
"""

from pathlib import Path

from ..artifacts.run_dir import DATA_DIR
from ..artifacts.saving import MERGED_SUBDIR
from ..models.tiny import is_tiny
from .spec import PipelineSpec

FIRST_STAGE_MODEL_KEYS = ("model_name_or_path", "tokenizer_name_or_path", "model_config_overrides")
SELECTION_DEFAULTS = {"num_prompts": 200, "max_new_tokens": 8, "data_split": "0,0,1"}
EVALUATION_DEFAULTS = {**SELECTION_DEFAULTS, "num_examples": 12}


class Resolver:
    """Each step's settings: what its marker records, and (for a training stage) its config file."""

    def __init__(self, spec: PipelineSpec):
        self.spec, self.task = spec, spec.task_provider
        self.run_dir = spec.run_dir
        self.data_dir = self.run_dir / DATA_DIR
        self.first_stage = "pretrain" if "pretrain" in spec.stages else "sft"

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def model_dir(self, stage: str) -> Path:
        """Where a stage's final full model is: its output_dir, or `merged/` in it after LoRA with merge_lora."""
        fields = {**self.spec.model, **self.spec.stage_fields(stage)}
        merged = fields.get("use_peft") and fields.get("merge_lora")
        return self.stage_dir(stage) / MERGED_SUBDIR if merged else self.stage_dir(stage)

    def base_model(self) -> str | None:
        """The first stage's starting checkpoint, when the pipeline has no stage 0 and the trained models
        share its tokenizer and architecture."""
        fields = {**self.spec.model, **self.spec.stage_fields(self.first_stage)}
        name = fields.get("model_name_or_path")
        if not name or is_tiny(name):
            return None
        if self.task is not None and self.task.tokenizer_path(self.data_dir):
            return None
        if fields.get("tokenizer_name_or_path") or fields.get("model_config_overrides"):
            return None
        return name

    def data_settings(self) -> dict:
        return {"seed": self.spec.seed, "task": self.spec.task}

    def stage_settings(self, stage: str, selection: dict | None) -> dict:
        model = dict(self.spec.model)
        if stage != self.first_stage:
            model = {k: v for k, v in model.items() if k not in FIRST_STAGE_MODEL_KEYS}
        settings = {**model, **self.spec.stage_fields(stage)}
        settings.update(output_dir=str(self.stage_dir(stage)), seed=self.spec.seed)
        if stage == "sft" and self.first_stage == "pretrain":
            settings["model_name_or_path"] = str(self.model_dir("pretrain"))
        if stage == "reward":
            settings["model_name_or_path"] = str(self.model_dir("sft"))
        if stage == "ppo":
            settings.update(sft_model_path=selection["chosen_path"], reward_model_path=str(self.model_dir("reward")))
            settings.pop("model_name_or_path", None)
        if self.task is not None:
            settings.update(self.task.data_fields(stage, self.data_dir))
            tokenizer = self.task.tokenizer_path(self.data_dir)
            if stage == self.first_stage and tokenizer:
                settings["tokenizer_name_or_path"] = tokenizer
        return settings

    def _judging_settings(self, step: str, section: dict, defaults: dict) -> dict:
        task_fields = self.task.data_fields(step, self.data_dir) if self.task is not None else {}
        return {**defaults, **section, **task_fields, "gold": bool(self.task and self.task.has_gold),
                "reward_dir": str(self.model_dir("reward"))}

    def select_settings(self) -> dict:
        return {**self._judging_settings("select", self.spec.selection, SELECTION_DEFAULTS),
                "sft_dir": str(self.model_dir("sft"))}

    def evaluate_settings(self, selection: dict) -> dict:
        policies = {}
        if "pretrain" in self.spec.stages:
            policies["pretrained"] = str(self.model_dir("pretrain"))
        elif self.base_model():
            policies["base"] = self.base_model()
        policies.update(sft=selection["chosen_path"], ppo=str(self.model_dir("ppo")))
        return {**self._judging_settings("evaluate", self.spec.evaluation, EVALUATION_DEFAULTS),
                "policies": policies, "reference_dir": selection["chosen_path"]}
