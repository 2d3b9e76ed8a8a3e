"""The report builder, on a fake run directory shaped like a real one: HF `trainer_state.json`
log histories, the reward stage's eval_rm.json, the PPO JSONL logs, the pipeline's files."""

import base64
import json
import re
from pathlib import Path

import pytest

from rlhf_recipes.report.build import build_report, format_summary, main
from rlhf_recipes.artifacts.run_dir import load_run, read_jsonl

STAGES = {
    "pretrained": {"greedy_accuracy": 0.31, "greedy_accuracy_hard": 0.05, "sampled_accuracy": 0.2,
                   "sampled_repetition": 0.02, "sampled_length": 1.1, "sampled_rm_score": -1.5, "kl_to_sft": 2.5},
    "sft": {"greedy_accuracy": 0.775, "greedy_accuracy_hard": 0.11, "sampled_accuracy": 0.588,
            "sampled_repetition": 0.16, "sampled_length": 1.4, "sampled_rm_score": 0.4, "kl_to_sft": 0.0},
    "ppo": {"greedy_accuracy": 0.99, "greedy_accuracy_hard": 0.95, "sampled_accuracy": 0.963,
            "sampled_repetition": 0.005, "sampled_length": 1.0, "sampled_rm_score": 2.1, "kl_to_sft": 0.8},
}


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    else:
        path.write_text(json.dumps(data))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    _write(tmp_path / "run_info.json", {
        "title": "RLHF demo",
        "config": {"seed": 0, "stages": ["sft", "reward", "ppo"]},
        "versions": {"trl": "1.16.0", "transformers": "5.24.0"},
        "stages": [
            {"name": "sft", "output_dir": "sft", "status": "ran", "wall_time_s": 4.5},
            {"name": "reward", "output_dir": "reward", "status": "skipped", "wall_time_s": 0.0},
            {"name": "ppo", "output_dir": "ppo", "status": "ran", "wall_time_s": 15.2},
        ],
        "total_wall_time_s": 19.7,
    })
    _write(tmp_path / "sft" / "trainer_state.json", {"log_history": [
        {"loss": 2.5, "mean_token_accuracy": 0.3, "step": 10, "epoch": 0.5},
        {"loss": 1.1, "mean_token_accuracy": 0.7, "step": 20, "epoch": 1.0},
        {"eval_loss": 1.2, "step": 20, "epoch": 1.0},
        {"train_runtime": 4.0, "train_loss": 1.8, "step": 20},
    ]})
    _write(tmp_path / "reward" / "trainer_state.json", {"log_history": [
        {"loss": 0.69, "accuracy": 0.5, "margin": 0.0, "step": 5},
        {"loss": 0.2, "accuracy": 0.93, "margin": 2.0, "step": 10},
        {"eval_loss": 0.25, "eval_accuracy": 0.9, "eval_margin": 1.8, "step": 10},
    ]})
    _write(tmp_path / "reward" / "eval_rm.json", {
        "num_pairs": 2, "num_skipped_too_long": 0, "max_length": None, "accuracy": 0.5, "mean_margin": 0.25,
        "chosen_mean": 1.0, "rejected_mean": 0.75,
        "pairs": [
            {"prompt": "Q: max 3 7 1 4 A:", "chosen": " 7", "chosen_score": 2.0, "rejected": " 3",
             "rejected_score": -1.0, "margin": 3.0},
            {"prompt": [{"role": "user", "content": "hi <b>there</b>"}], "chosen": [{"role": "assistant", "content": "hello"}],
             "chosen_score": 0.0, "rejected": [{"role": "assistant", "content": "go away"}], "rejected_score": 2.5,
             "margin": -2.5},
        ],
    })
    _write(tmp_path / "ppo" / "ppo_log.jsonl", [
        {"step": i, "objective/kl": 0.01 * i, "objective/scores": 0.1 * i, "loss/policy": -0.01 * i,
         "loss/value": 1.0 / (i + 1), "kl_coef": 0.05} for i in range(1, 6)
    ])
    _write(tmp_path / "ppo" / "samples.jsonl", [
        {"step": i, "prompt": "Q: max 1 2 3 9 A:", "completion": " 9" if i > 2 else " 1", "score": float(i)} for i in range(10)
    ])
    _write(tmp_path / "evaluation.json", {
        "gold": True, "num_prompts": 200, "stages": STAGES, "rm_ranked_first": 0.95,
        "examples": [{"prompt": "Q: max 1 2 3 9 A:", "gold": "9", "answers": {"pretrained": "1", "sft": "1", "ppo": "9"}}],
    })
    _write(tmp_path / "selection.json", {"num_prompts": 200, "chosen": "checkpoint-20", "candidates": [
        {"checkpoint": "checkpoint-10", "step": 10, "rm_score": 0.1, "gold_accuracy": 0.6},
        {"checkpoint": "checkpoint-20", "step": 20, "rm_score": 0.4, "gold_accuracy": 0.77},
    ]})
    return tmp_path


def test_report_has_every_table_and_only_plots_that_exist(run_dir):
    built = build_report(run_dir)
    html, md = built.html.read_text(), built.markdown.read_text()
    for text in (html, md):
        assert "77.5%" in text and "99.0%" in text  # greedy accuracy SFT, PPO
        assert "hard-subset acc" in text and "KL to SFT" in text
        assert "checkpoint-20" in text
        assert "correct answer ranked first" in text and "95.0%" in text
        assert "+21.5 points" in text
        assert "Wall time per stage" in text and "15.2 s" in text
        assert "trl" in text and "1.16.0" in text
    assert "&lt;b&gt;there&lt;/b&gt;" in html and "<b>there" not in html
    assert '<td class="pass">✓ 9</td>' in html
    assert '<td class="fail">✗ 1</td>' in html
    for name in ("sft.png", "reward.png", "ppo.png", "metrics.png"):
        png = (run_dir / "plots" / name).read_bytes()
        assert len(png) > 5000
        assert base64.b64encode(png).decode() in html and f"plots/{name}" in md  # embedded in HTML, linked in MD
    assert not (run_dir / "plots" / "pretrain.png").exists()
    assert "pretrain.png" not in md


def test_html_is_one_self_contained_file(run_dir):
    """Every src/href is an embedded data URI or an in-page anchor: report.html can be mailed alone."""
    html = build_report(run_dir).html.read_text()
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html, flags=re.IGNORECASE)
    assert len(references) == 4  # sft, reward and ppo curves, metrics bars
    assert all(ref.startswith(("data:image/png;base64,", "#")) for ref in references), references
    assert not re.search(r"url\(|@import|<link|<script", html, flags=re.IGNORECASE)


def test_settings_are_collapsed_and_a_constant_series_is_a_value_not_a_plot(run_dir):
    html = build_report(run_dir).html.read_text()
    settings = html[html.index("<details>"):html.index("</details>")]
    assert "<summary>Run settings</summary>" in settings and "Pipeline settings" in settings
    assert "Constant throughout PPO (not plotted): kl_coef = 0.05." in html


def test_report_is_rebuilt_from_the_run_dir_alone_by_the_cli(run_dir, capsys):
    assert main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert str(run_dir / "report.html") in out
    assert "greedy acc" in out and "77.5%" in out
    assert (run_dir / "report.md").is_file()


def test_missing_parts_are_left_out_not_invented(tmp_path):
    _write(tmp_path / "reward" / "trainer_state.json", {"log_history": [{"loss": 0.6, "accuracy": 0.6, "step": 1}]})
    built = build_report(tmp_path)
    html = built.html.read_text()
    assert built.plots["reward"] == "plots/reward.png" and html.count("data:image/png;base64,") == 1
    assert "Held-out metrics" not in html and "SFT checkpoint selection" not in html
    assert built.plots["ppo"] is None and not (tmp_path / "plots" / "ppo.png").exists()


def test_ppo_plots_with_missing_keys_and_generic_metrics(tmp_path):
    _write(tmp_path / "ppo" / "ppo_log.jsonl", [{"step": 1, "objective/kl": 0.1}, {"step": 2, "objective/kl": 0.2}])
    generic = {"sft": {"sampled_tokens": 12.0, "sampled_eos_rate": 0.5, "greedy_rm_score": 0.1, "kl_to_sft": 0.0},
               "ppo": {"sampled_tokens": 8.0, "sampled_eos_rate": 0.9, "greedy_rm_score": 0.7, "kl_to_sft": 0.3}}
    _write(tmp_path / "evaluation.json", {"gold": False, "num_prompts": 4, "stages": generic,
                                          "examples": [{"prompt": "Human: hi", "answers": {"sft": "yo", "ppo": "hello"}},
                                                                       {"prompt": "Human: ?", "answers": {"sft": " \n", "ppo": "ok"}}]})
    built = build_report(tmp_path)
    md = built.markdown.read_text()
    assert built.plots["ppo"] == "plots/ppo.png"
    assert "No gold metric" in md and "EOS rate T=1" in md and "greedy acc" not in md
    assert "| Human: hi | yo | hello |" in md
    assert "| Human: ? | (empty or only whitespace) | ok |" in md


def test_cut_off_last_jsonl_line_is_ignored(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "objective/k')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]


def test_summary_fits_one_screen(run_dir):
    summary = format_summary(run_dir, build_report(run_dir))
    assert len(summary.splitlines()) <= 24
    assert "PPO started from checkpoint-20" in summary
    assert "pair accuracy 50.0%" in summary


def test_missing_run_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path / "nope")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope")])
