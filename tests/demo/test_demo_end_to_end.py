"""The demo pipeline shrunken to a few steps per stage, run for real end to end: every stage's
own code, SFT checkpoint selection, held-out evaluation, the report; then a re-run that skips
every finished step, the report rebuilt from the run dir alone, and `generate` on the PPO model."""

import base64
import copy
import json

import pytest

from rlhf_recipes.tools.chat import main as chat_main
from rlhf_recipes.demo.run import DEMO_PIPELINE
from rlhf_recipes.pipeline.runner import run_pipeline
from rlhf_recipes.pipeline.spec import spec_from_dict
from rlhf_recipes.report.build import main as report_main


def _shrunken(output_dir: str) -> dict:
    raw = copy.deepcopy(DEMO_PIPELINE)
    raw["output_dir"] = output_dir
    raw["task"].update(num_heldout=16, num_validation=8, num_pairs=300, num_corpus=200)
    raw["model"]["model_config_overrides"].update(hidden_size=32, ffn_dim=64, word_embed_proj_dim=32)
    stages = raw["stages"]
    stages["pretrain"].update(max_steps=2)
    stages["sft"].update(max_steps=4, save_steps=2, eval_strategy="no", eval_split_size=0)
    stages["reward"].update(max_steps=2, eval_strategy="no", eval_split_size=16)
    stages["ppo"].update(max_steps=2, per_device_train_batch_size=16, num_mini_batches=2, num_ppo_epochs=1,
                         sample_every=1)
    raw["selection"] = {"num_prompts": 8, "max_new_tokens": 4}
    raw["evaluation"] = {"num_prompts": 16, "max_new_tokens": 4, "num_examples": 4}
    return raw


@pytest.mark.slow
def test_shrunken_demo_end_to_end(tmp_path, capsys):
    run_dir = run_pipeline(spec_from_dict(_shrunken(str(tmp_path / "demo"))))
    out = capsys.readouterr().out
    assert "greedy acc" in out and str(run_dir / "report.html") in out

    def prompts(name):
        return {json.loads(line)["prompt"].split(None, 2)[2] for line in (run_dir / "data" / name).open()}

    heldout = prompts("heldout.jsonl")  # the digits of each prompt, whatever the question
    for name in ("sft.jsonl", "pairs.jsonl", "prompts.jsonl", "corpus.jsonl", "validation.jsonl"):
        assert heldout.isdisjoint(prompts(name)), name

    selection = json.loads((run_dir / "selection.json").read_text())
    assert [c["checkpoint"] for c in selection["candidates"]] == ["checkpoint-2", "checkpoint-4"]
    assert selection["chosen"] in {"checkpoint-2", "checkpoint-4"}
    assert all("gold_accuracy" in c for c in selection["candidates"])

    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert list(evaluation["stages"]) == ["pretrained", "sft", "ppo"]
    assert evaluation["num_prompts"] == 16 and len(evaluation["examples"]) == 4
    assert evaluation["stages"]["sft"]["kl_to_sft"] == pytest.approx(0.0, abs=1e-5)
    assert 0.0 <= evaluation["rm_ranked_first"] <= 1.0
    assert len((run_dir / "ppo" / "ppo_log.jsonl").read_text().splitlines()) == 2

    html = (run_dir / "report.html").read_text()
    for text in ("hard-subset acc", "SFT checkpoint selection", "Reward model", "Wall time per stage", "trl"):
        assert text in html
    for png in ("pretrain", "sft", "reward", "ppo", "metrics"):  # written beside report.md, embedded in the HTML
        image = run_dir / "plots" / f"{png}.png"
        assert image.is_file() and base64.b64encode(image.read_bytes()).decode("ascii") in html
    assert "plots/" not in html

    run_pipeline(spec_from_dict(_shrunken(str(tmp_path / "demo"))))
    info = json.loads((run_dir / "run_info.json").read_text())
    assert {entry["status"] for entry in info["stages"]} == {"skipped"}

    (run_dir / "report.html").unlink()
    assert report_main([str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()

    capsys.readouterr()
    chat_main(["generate", "--model_name_or_path", str(run_dir / "ppo"), "--prompt", "Q: max 3 7 1 4 A:",
               "--max_new_tokens", "4"])
    assert "prompt: Q: max 3 7 1 4 A:\nanswer:" in capsys.readouterr().out
