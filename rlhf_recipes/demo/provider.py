"""The demo task as a pipeline task provider: `task: {provider: rlhf_recipes.demo.provider:MaxDigitTask, ...}`.

It writes the task's files (`files.write_task_files`), points every stage at its own file, gives the
first stage the task's word-level tokenizer, and brings the gold checker: exact-match accuracy,
side-by-side examples half from the hard subset, how often the reward model ranks the correct
answer first, and held-out stage-0-style texts for the alignment tax (each policy's LM loss on them).
"""

from pathlib import Path

from ..data.splits import WHOLE
from ..pipeline.tasks import TaskProvider
from .files import FILES, TOKENIZER_DIR, write_task_files
from .metrics import HELDOUT_CORPUS_TEXTS, gold_metrics, heldout_corpus, ranked_first_rate
from .task import TaskSettings, gold_answer, is_hard, parse_prompt

# Each stage's file is entirely its own: SFT and the reward model take the whole file (shuffled),
# PPO its prompts and ptx texts whole, in file order. The evaluation also records how many held-out corpus
# texts its LM loss is measured on (`heldout_lm_texts`), so a run evaluated before that measure existed is
# evaluated again.
STAGE_DATA = {
    "pretrain": {"dataset_name": "corpus", "data_split": "1,0,0"},
    "sft": {"dataset_name": "sft", "data_split": "1,0,0"},
    "reward": {"dataset_name": "pairs", "data_split": "0,1,0"},
    "ppo": {"dataset_name": "prompts", "data_split": WHOLE, "ptx_dataset_name": "ptx", "ptx_data_split": WHOLE},
    "select": {"dataset_name": "validation"},
    "evaluate": {"dataset_name": "heldout", "heldout_lm_texts": HELDOUT_CORPUS_TEXTS},
}


class MaxDigitTask(TaskProvider):
    """`Q: max d1 d2 d3 d4 A:` -> the largest digit; keyword arguments are `TaskSettings` fields."""

    has_gold = True
    heldout_lm_about = (
        f"{HELDOUT_CORPUS_TEXTS} pretraining-style texts drawn like the stage-0 corpus (first/last/min of four "
        "digits with the answer) that the corpus does not contain"
    )

    def __init__(self, **settings):
        if "data_split" in settings:
            settings["data_split"] = tuple(settings["data_split"])
        self.settings = TaskSettings(**settings)

    def write_data(self, data_dir: Path, seed: int) -> None:
        write_task_files(data_dir, seed, self.settings)

    def data_fields(self, step: str, data_dir: Path) -> dict:
        return {
            key: str(data_dir / FILES[value]) if key.endswith("dataset_name") else value
            for key, value in STAGE_DATA[step].items()
        }

    def tokenizer_path(self, data_dir: Path) -> str:
        return str(data_dir / TOKENIZER_DIR)

    def gold_metrics(self, prompts: list[str], answers: list[str], prefix: str) -> dict[str, float]:
        return gold_metrics(prompts, answers, prefix)

    def gold_answer(self, prompt: str) -> str:
        return gold_answer(prompt)

    def example_indices(self, prompts: list[str], count: int) -> list[int]:
        """Half from the hard subset, the rest the first easy ones, in prompt order."""
        hard = [i for i, p in enumerate(prompts) if is_hard(parse_prompt(p))]
        easy = [i for i, p in enumerate(prompts) if not is_hard(parse_prompt(p))]
        return sorted(hard[: count // 2] + easy[: count - min(count // 2, len(hard))])

    def heldout_lm_texts(self, seed: int) -> list[str]:
        return heldout_corpus(seed, self.settings)

    def reward_model_checks(self, reward_model, tokenizer, prompts: list[str]) -> dict[str, float]:
        return {"rm_ranked_first": ranked_first_rate(reward_model, tokenizer, prompts)}
