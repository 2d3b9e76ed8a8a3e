"""Model cards and Hugging Face Hub uploads for the final model of a stage.

`build_model_card` writes what a reader needs to trust and reproduce a model: base model,
data and split, hyper-parameters, the stage's own results found in its output directory
(training loss; reward-model evaluation from `eval_rm.json`; PPO metrics from `ppo_log.jsonl`)
and the exact command. `push_to_hub` uploads a directory with `huggingface_hub`
(`create_repo` + `upload_folder`, checkpoints left out). `finish_and_push` is the one call a
stage makes at its end: it writes the card to `output_dir/README.md` and, with
`push_to_hub: true`, uploads the directory to `hub_model_id`.
"""

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from huggingface_hub import HfApi

from ..config.paths import looks_like_local_path
from ..data.splits import WHOLE
from ..data.stages import STAGES as DATA_SPLIT_STAGES
from .run_dir import MODEL_CARD, PPO_LOG, RM_EVAL, STAGE_DESCRIPTIONS, TRAIN_RESULTS, read_json, read_jsonl

DATA_FILE_SUFFIXES = {".json", ".jsonl", ".csv", ".parquet", ".txt", ".arrow"}
UPLOAD_IGNORE = ["checkpoint-*", ".tmp-*", "latest", "runs/*", "_*"]

COMMON_KEYS = (
    "learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay", "adam_beta1", "adam_beta2",
    "max_grad_norm", "max_length", "seed", "bf16", "fp16",
)
STAGE_KEYS = {
    "sft": ("packing", "completion_only_loss", "assistant_only_loss"),
    "reward": ("center_rewards_coefficient",),
    "ppo": (
        "critic_learning_rate", "kl_coef", "kl_estimator", "adaptive_kl", "target_kl", "cliprange", "cliprange_value",
        "vf_coef", "gamma", "lam", "num_ppo_epochs", "num_mini_batches", "max_prompt_length", "response_length",
        "temperature", "reward_clip", "missing_eos_penalty", "ptx_coef", "ema", "ema_decay",
    ),
}
MODEL_KEYS = (
    "dtype", "dropout", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "use_bnb_nested_quant",
)
PPO_METRICS = (
    "objective/scores", "objective/rlhf_reward", "objective/kl", "objective/entropy",
    "objective/response_length", "loss/policy", "loss/value", "loss/ptx",
)
LOAD_CLASSES = {
    ("sft", False): "AutoModelForCausalLM", ("ppo", False): "AutoModelForCausalLM",
    ("reward", False): "AutoModelForSequenceClassification",
    ("sft", True): "AutoPeftModelForCausalLM", ("ppo", True): "AutoPeftModelForCausalLM",
    ("reward", True): "AutoPeftModelForSequenceClassification",
}


@dataclass
class CardInfo:
    """What a model card says about a run that its output directory does not record."""

    stage: str
    base_model: str
    datasets: dict[str, float | None]  # source -> fraction taken (None: all of it)
    data_split: str | None = None
    eval_split_size: float | None = None
    hyperparameters: dict = field(default_factory=dict)
    command: str | None = None
    config_text: str | None = None
    uses_peft: bool = False
    related_models: dict = field(default_factory=dict)  # e.g. {"reward model": path}

    def __post_init__(self):
        if self.stage not in STAGE_DESCRIPTIONS:
            raise ValueError(
                f"Unknown stage {self.stage!r}; a model card is written for one of {sorted(STAGE_DESCRIPTIONS)}."
            )


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]


def _short(text, limit: int = 120) -> str:
    if isinstance(text, list):
        text = " | ".join(f"{message['role']}: {message['content']}" for message in text)
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."


def _rm_eval_section(output_dir: Path) -> list[str]:
    report = read_json(output_dir / RM_EVAL)
    if report is None:
        return []
    lines = ["## Reward-model evaluation (held-out pairs)", ""]
    header = ("pairs", "accuracy (chosen > rejected)", "mean margin", "mean score good (chosen)",
              "mean score bad (rejected)")
    keys = ("num_pairs", "accuracy", "mean_margin", "chosen_mean", "rejected_mean")
    lines += _table(header, [tuple(report[key] for key in keys)])
    examples = report.get("pairs", [])[:3]
    if examples:
        lines += ["", "Examples:", ""]
        lines += _table(
            ("prompt", "good (chosen)", "score", "bad (rejected)", "score"),
            [(_short(p["prompt"]), _short(p["chosen"]), p["chosen_score"], _short(p["rejected"]),
              p["rejected_score"]) for p in examples],
        )
    return lines + [""]


def _ppo_section(output_dir: Path) -> list[str]:
    records = [r for r in read_jsonl(output_dir / PPO_LOG) if "objective/scores" in r]
    if not records:
        return []
    first, last = records[0], records[-1]
    rows = [(key, first[key], last[key]) for key in PPO_METRICS if key in first and key in last]
    lines = ["## PPO metrics", "", f"{len(records)} logged updates (last step {last.get('step')}).", ""]
    header = ("metric", f"first update (step {first.get('step')})", f"last update (step {last.get('step')})")
    return lines + _table(header, rows) + [""]


def _training_section(output_dir: Path) -> list[str]:
    results = read_json(output_dir / TRAIN_RESULTS)
    if not results:
        return []
    return ["## Training results", "", *_table(("metric", "value"), sorted(results.items())), ""]


def _is_hub_id(name: str) -> bool:
    """`name` or `org/name` that is neither a local path nor a data file name."""
    return not looks_like_local_path(name, DATA_FILE_SUFFIXES)


def _metadata(info: CardInfo) -> dict:
    tags = ["rlhf-recipes", "rlhf", "trl", info.stage]
    library = "peft" if info.uses_peft else "transformers"
    metadata = {"base_model": info.base_model, "library_name": library, "tags": tags}
    hub_datasets = [name for name in info.datasets if _is_hub_id(name)]
    if hub_datasets:
        metadata["datasets"] = hub_datasets
    metadata["pipeline_tag"] = "text-classification" if info.stage == "reward" else "text-generation"
    return metadata


def build_model_card(output_dir: str, info: CardInfo, repo_id: str | None = None) -> str:
    """The model card (Markdown with YAML metadata) for the model saved in `output_dir`.

    Sections for training loss, reward-model evaluation and PPO metrics appear only when the
    stage wrote their files (`train_results.json`, `eval_rm.json`, `ppo_log.jsonl`) there.
    """
    out = Path(output_dir)
    title = repo_id or out.name
    lines = ["---", yaml.safe_dump(_metadata(info), sort_keys=False, allow_unicode=True).strip(), "---", ""]
    lines += [f"# {title}", "", f"Trained with rlhf-recipes: InstructGPT {STAGE_DESCRIPTIONS[info.stage]}.", ""]
    adapter = " (LoRA adapter trained on it)" if info.uses_peft else ""
    lines += ["## Models", "", f"- Base model: `{info.base_model}`{adapter}"]
    lines += [f"- {role.capitalize()}: `{path}`" for role, path in info.related_models.items() if path]
    lines += ["", "## Data", ""]
    for name, fraction in info.datasets.items():
        lines.append(f"- `{name}`" + ("" if fraction is None else f" (fraction {fraction} of its rows)"))
    if info.data_split == WHOLE:
        lines.append(f"- Split `data_split: {WHOLE}`: every row, in file order (data made for this stage).")
    elif info.data_split:
        part = DATA_SPLIT_STAGES.index(info.stage) + 1
        lines.append(
            f"- Split `data_split: {info.data_split}` (sft, reward, ppo shares of each source): this stage used "
            f"part {part} of 3, disjoint from the other stages' parts."
        )
    if info.eval_split_size:
        lines.append(f"- Held out for evaluation from this part: {_fmt(info.eval_split_size)} (`eval_split_size`).")
    lines += ["", "## Hyper-parameters", ""]
    lines += _table(("name", "value"), list(info.hyperparameters.items())) + [""]
    lines += _training_section(out) + _rm_eval_section(out) + _ppo_section(out)
    if info.command:
        lines += ["## Reproduce", "", "```bash", info.command, "```", ""]
    if info.config_text:
        lines += ["Recipe file used:", "", "```yaml", info.config_text.rstrip(), "```", ""]
    load_class = LOAD_CLASSES[(info.stage, info.uses_peft)]
    module = "peft" if info.uses_peft else "transformers"
    lines += [
        "## Use", "", "```python", f"from {module} import {load_class}", "from transformers import AutoTokenizer", "",
        f'model = {load_class}.from_pretrained("{title}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{title}")', "```", "",
    ]
    return "\n".join(lines)


def push_to_hub(
    output_dir: str,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload model trained with rlhf-recipes",
):
    """Create `repo_id` (if needed) and upload `output_dir` to it, leaving checkpoints out.

    Returns the `CommitInfo` of the upload. A failed upload raises `RuntimeError` naming the
    repository; the local directory is untouched.
    """
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"Nothing to push: {output_dir!r} is not a directory.")
    if not repo_id or repo_id.count("/") > 1:
        raise ValueError(f"hub_model_id must be 'name' or 'namespace/name', got {repo_id!r}.")
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=output_dir,
            commit_message=commit_message,
            revision=revision,
            ignore_patterns=UPLOAD_IGNORE,
        )
    except Exception as err:
        raise RuntimeError(
            f"Pushing {output_dir!r} to the Hub repository {repo_id!r} failed: {err}. The model is saved locally in "
            f"{output_dir!r}; push it again with rlhf_recipes.artifacts.hub.push_to_hub."
        ) from err


def _command(stage: str, argv: Sequence[str] | None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["rlhf-recipes", stage, *argv])


def _config_text(argv: Sequence[str] | None) -> str | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        return None
    path = argv[argv.index("--config") + 1]
    return Path(path).read_text(encoding="utf-8") if os.path.isfile(path) else None


def _hyperparameters(stage: str, model_args, training_args) -> dict:
    params = {}
    for key in COMMON_KEYS + STAGE_KEYS[stage]:
        value = getattr(training_args, key, None)
        if value is None or (key == "max_steps" and value <= 0) or (key.startswith("warmup") and not value):
            continue
        params[key] = value
    params["world_size (ranks)"] = training_args.world_size
    params["effective batch size"] = (
        training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size
    )
    for key in MODEL_KEYS:
        value = getattr(model_args, key, None)
        if value not in (None, False) and (model_args.use_peft or not key.startswith(("lora_", "bnb_"))):
            params[key] = value
    return params


def card_info_from_args(
    stage: str, model_args, data_args, training_args, argv: Sequence[str] | None = None
) -> CardInfo:
    """A `CardInfo` from a stage's parsed arguments; `argv` (default `sys.argv[1:]`) gives the command."""
    datasets = {data_args.dataset_name: None} if data_args.dataset_name else dict(data_args.dataset_mixer or {})
    related = {}
    if stage == "ppo":
        related = {
            "SFT policy": getattr(training_args, "sft_model_path", None),
            "reward model": getattr(training_args, "reward_model_path", None),
            "critic initialisation": getattr(training_args, "value_model_path", None),
        }
    return CardInfo(
        stage=stage,
        base_model=model_args.model_name_or_path,
        datasets=datasets,
        data_split=data_args.data_split,
        eval_split_size=data_args.eval_split_size,
        hyperparameters=_hyperparameters(stage, model_args, training_args),
        command=_command(stage, argv),
        config_text=_config_text(argv),
        uses_peft=bool(model_args.use_peft),
        related_models=related,
    )


def finish_and_push(stage: str, model_args, data_args, training_args, argv: Sequence[str] | None = None):
    """End of a stage: write `output_dir/README.md` and, with `push_to_hub`, upload `output_dir`.

    Call it on every rank after the final model is saved; only the main process writes and
    uploads. The repository is `hub_model_id` (default: the name of `output_dir`, as the HF
    Trainer does); `hub_token`, `hub_private_repo` and `hub_revision` are honoured. Returns the
    upload's `CommitInfo`, or None when nothing was pushed.
    """
    if training_args.process_index != 0:
        return None
    output_dir = training_args.output_dir
    repo_id = (training_args.hub_model_id or Path(output_dir).name) if training_args.push_to_hub else None
    card = build_model_card(output_dir, card_info_from_args(stage, model_args, data_args, training_args, argv), repo_id)
    os.makedirs(output_dir, exist_ok=True)
    Path(output_dir, MODEL_CARD).write_text(card, encoding="utf-8")
    if not training_args.push_to_hub:
        return None
    print(f"{stage}: pushing {output_dir} to the Hub repository {repo_id}")
    return push_to_hub(
        output_dir,
        repo_id,
        token=training_args.hub_token,
        private=training_args.hub_private_repo,
        revision=training_args.hub_revision,
        commit_message=f"rlhf-recipes {stage}: end of training",
    )
