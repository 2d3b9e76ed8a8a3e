"""Every stage for a step or two on the real SmolLM2-135M-Instruct weights (CI: a few minutes on 2 cores)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_recipes.models.generation import SamplingConfig, generate
from rlhf_recipes.ppo.run import main as ppo_main
from rlhf_recipes.stages.reward import main as reward_main
from rlhf_recipes.stages.reward_eval import evaluate_reward_model, load_reward_model
from rlhf_recipes.stages.sft import main as sft_main

COMMON = ["--dtype", "float32", "--bf16", "false", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no",
          "--eval_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true", "--seed", "0"]
LORA = ["--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16", "--lora_target_modules", "all-linear",
        "--merge_lora", "true"]


def test_the_converted_checkpoint_reloads_and_answers_in_chat_form(smollm2_dir):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id == tokenizer.eos_token_id
    config = SamplingConfig(max_new_tokens=24, pad_token_id=tokenizer.pad_token_id, greedy=True,
                            stop_token_ids=(tokenizer.eos_token_id,))
    (answer,) = generate(model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]],
                         config, batch_size=1)
    assert answer[-1] == tokenizer.eos_token_id  # stops at <|im_end|>, well before the token budget
    assert "Paris" in tokenizer.decode(answer)


@pytest.mark.slow
def test_sft_reward_and_ppo_run_on_smollm2(smollm2_dir, shared_data, tmp_path):
    pool = str(shared_data / "hh_rlhf_helpful_train_pool.jsonl")
    data = ["--dataset_name", pool, "--data_split", "1,1,1", "--eval_split_size", "0"]
    sft_main(["--model_name_or_path", "smollm2-135m-instruct", *data, *COMMON, *LORA, "--max_steps", "1",
              "--per_device_train_batch_size", "1", "--max_length", "192", "--output_dir", str(tmp_path / "sft")])
    sft = tmp_path / "sft" / "merged"
    reward_main(["--model_name_or_path", str(sft), *data, *COMMON, *LORA, "--max_steps", "1",
                 "--per_device_train_batch_size", "1", "--max_length", "256", "--output_dir", str(tmp_path / "rm")])
    rm = tmp_path / "rm" / "merged"
    # the reward model reads the chat text it was trained on: SmolLM2's template, ending with <|im_end|>
    model, tokenizer = load_reward_model(str(rm))
    pair = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "No."}]}
    report = evaluate_reward_model(model, tokenizer, [pair])
    assert report["num_pairs"] == 1
    ppo_main(["--sft_model_path", str(sft), "--reward_model_path", str(rm), "--dataset_name", pool,
              "--data_split", "1,1,1", "--eval_split_size", "0", *COMMON, "--use_peft", "true", "--lora_r", "8",
              "--lora_target_modules", "all-linear", "--critic_use_peft", "true", "--max_steps", "1",
              "--per_device_train_batch_size", "2", "--local_rollout_forward_batch_size", "2",
              "--num_mini_batches", "1", "--max_prompt_length", "160", "--response_length", "16",
              "--output_dir", str(tmp_path / "ppo")])
    state = json.loads((tmp_path / "ppo" / "trainer_state.json").read_text())
    assert state["global_step"] == 1
