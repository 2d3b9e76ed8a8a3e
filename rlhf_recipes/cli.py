"""The `rlhf-recipes` command: one subcommand per recipe, each reusing the recipe's own parser."""

import importlib
import sys

# subcommand -> (module with a `main(argv)` function, one-line help)
COMMANDS = {
    "sft": ("rlhf_recipes.stages.sft", "Step 1: supervised fine-tuning (trl.SFTTrainer)."),
    "reward": ("rlhf_recipes.stages.reward", "Step 2: pairwise reward model (trl.RewardTrainer) + RM evaluation."),
    "eval-rm": ("rlhf_recipes.stages.reward_eval", "Score chosen vs rejected answers with a reward model."),
    "ppo": ("rlhf_recipes.ppo.run", "Step 3: PPO(-ptx) against the reward model."),
    "pipeline": ("rlhf_recipes.pipeline.runner", "Run the stages of a pipeline YAML in order."),
    "demo": ("rlhf_recipes.demo.run", "The offline CPU demo: all of RLHF on a checkable toy task."),
    "report": ("rlhf_recipes.report.build", "Build report.html/report.md for a run directory."),
    "generate": ("rlhf_recipes.tools.chat", "Generate completions for prompts with any stage's model."),
    "chat": ("rlhf_recipes.tools.chat", "Talk to any stage's model in the terminal."),
    "make-pairs": ("rlhf_recipes.tools.make_pairs", "Preference pairs whose rejected answer comes from a model."),
}


def _usage() -> str:
    lines = ["usage: rlhf-recipes <command> [--config FILE.yaml] [--field value ...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rlhf-recipes: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name in ("chat", "generate"):
        rest = [name, *rest]
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
