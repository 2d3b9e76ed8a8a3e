"""The value-head reward model on a remote-code causal LM that the test writes itself.

`modeling_toy.py` defines a config and a causal LM that transformers does not know: the model is saved with
`auto_map` and loaded with `trust_remote_code=True`, like ChatGLM3. Like ChatGLM's, its body is called
`transformer`, returns hidden states sequence-first (T x B x H) and has no sequence-classification class,
so the reward stage, eval-rm and PPO must all go through `CausalLMWithValueHead`.
"""

import importlib.util
import json
import sys

import pytest
import torch
from datasets import Dataset
from trl import RewardConfig

from rlhf_recipes.data.config import DataArguments
from rlhf_recipes.models import ModelArguments, build_byte_tokenizer, load_model, load_tokenizer
from rlhf_recipes.models.value_head import CausalLMWithValueHead, wants_value_head
from rlhf_recipes.ppo.config import PPOConfig
from rlhf_recipes.ppo.run import run_ppo
from rlhf_recipes.stages.reward import train_reward
from rlhf_recipes.stages.reward_eval import load_reward_model
from rlhf_recipes.stages.reward_eval import main as eval_rm_main

MODELING_TOY = '''
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput


class ToyConfig(PretrainedConfig):
    model_type = "toy_remote"

    def __init__(self, vocab_size=260, hidden_size=32, max_position_embeddings=256, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.max_position_embeddings = max_position_embeddings
        super().__init__(**kwargs)


class ToyPreTrainedModel(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "transformer"


class ToyModel(ToyPreTrainedModel):
    """Embeddings, a causal running mean over the real tokens and an MLP; output T x B x H like ChatGLM."""

    def __init__(self, config):
        super().__init__(config)
        self.embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.Tanh())
        self.post_init()

    def get_input_embeddings(self):
        return self.embedding

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None, **kwargs):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if position_ids is None:
            position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        x = (self.embedding(input_ids) + self.position(position_ids)) * mask.unsqueeze(-1)
        mean = x.cumsum(1) / mask.cumsum(1).clamp(min=1).unsqueeze(-1)
        return BaseModelOutput(last_hidden_state=self.mlp(mean).transpose(0, 1))


class ToyForCausalLM(ToyPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.transformer = ToyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        hidden = self.transformer(input_ids, attention_mask, position_ids)[0].transpose(0, 1)
        return CausalLMOutput(logits=self.lm_head(hidden))
'''


FAST = dict(use_cpu=True, bf16=False, report_to="none", activation_checkpointing=False, save_strategy="no",
            logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, max_length=128)


def _pairs(count: int) -> list[dict]:
    return [{"prompt": f"Q{i % 7}: say something. A:", "chosen": " good", "rejected": " evil"} for i in range(count)]


@pytest.fixture(scope="module")
def remote_lm(tmp_path_factory) -> str:
    """A remote-code causal LM saved with `auto_map` (its .py file beside the weights) and a byte tokenizer."""
    source = tmp_path_factory.mktemp("toy_source") / "modeling_toy.py"
    source.write_text(MODELING_TOY)
    spec = importlib.util.spec_from_file_location("modeling_toy", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules["modeling_toy"] = module
    spec.loader.exec_module(module)
    tokenizer = build_byte_tokenizer()
    config = module.ToyConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    module.ToyConfig.register_for_auto_class()
    module.ToyForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("toy_remote_lm")
    module.ToyForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    del sys.modules["modeling_toy"]  # what loads it from now on is transformers' remote-code machinery
    saved = json.loads((path / "config.json").read_text())
    assert "AutoModelForCausalLM" in saved["auto_map"] and (path / "modeling_toy.py").is_file()
    return str(path)


@pytest.fixture(scope="module")
def trained_rm(remote_lm, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("toy_rm")
    config = RewardConfig(output_dir=str(output_dir), max_steps=2, per_device_train_batch_size=4,
                          learning_rate=1e-2, trust_remote_code=True, **FAST)
    trainer, report = train_reward(ModelArguments(model_name_or_path=remote_lm), config,
                                   Dataset.from_list(_pairs(8)), Dataset.from_list(_pairs(4)))
    return trainer, report, output_dir


def test_remote_code_model_without_a_classification_class_gets_the_value_head(remote_lm):
    args = ModelArguments(model_name_or_path=remote_lm)
    tokenizer = load_tokenizer(args, trust_remote_code=True)
    model = load_model(args, tokenizer, task="seq-cls", trust_remote_code=True)
    assert isinstance(model, CausalLMWithValueHead) and model.config.num_labels == 1
    batch = tokenizer(["a longer text here", "hi"], padding=True, return_tensors="pt")  # left padded
    scores = model(**batch).logits
    assert scores.shape == (2, 1)
    # the score is read at each row's last real token: the short row alone scores the same
    alone = model(**tokenizer(["hi"], return_tensors="pt")).logits
    torch.testing.assert_close(scores[1], alone[0])
    assert not wants_value_head(load_model(ModelArguments(model_name_or_path="tiny:llama"), tokenizer,
                                           task="seq-cls").config, None)


def test_reward_step_trains_and_saves_a_value_head_model_that_reloads(trained_rm, remote_lm):
    trainer, report, output_dir = trained_rm
    assert isinstance(trainer.model, CausalLMWithValueHead)
    assert report["num_pairs"] == 4
    assert (output_dir / "modeling_toy.py").is_file()  # the remote code travels with the reward model
    reloaded, tokenizer = load_reward_model(str(output_dir), trust_remote_code=True)
    assert isinstance(reloaded, CausalLMWithValueHead)
    batch = tokenizer(["Q1: say something. A: good", "Q1: say something. A: evil"], padding=True,
                      return_tensors="pt")
    trained = trainer.model.eval()
    torch.testing.assert_close(reloaded(**batch).logits, trained(**batch).logits)
    # the head was trained, not freshly initialised on reload
    fresh = load_model(ModelArguments(model_name_or_path=remote_lm), tokenizer, "seq-cls", trust_remote_code=True)
    assert not torch.equal(fresh.score.weight, reloaded.score.weight)


def test_eval_rm_scores_the_saved_value_head_model(trained_rm, tmp_path):
    _, _, output_dir = trained_rm
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _pairs(6)))
    report_path = tmp_path / "eval.json"
    eval_rm_main(["--model_name_or_path", str(output_dir), "--dataset", str(data), "--trust_remote_code", "true",
                  "--json", str(report_path)])
    assert json.loads(report_path.read_text())["num_pairs"] == 6


def test_ppo_reads_the_value_head_reward_model_and_trains_a_value_head_critic(trained_rm, tmp_path):
    _, _, output_dir = trained_rm
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _pairs(8)))
    args = PPOConfig(
        output_dir=str(tmp_path / "ppo"), sft_model_path="tiny:llama", reward_model_path=str(output_dir),
        trust_remote_code=True, max_steps=2, per_device_train_batch_size=4, num_mini_batches=1,
        local_rollout_forward_batch_size=4, response_length=8, max_prompt_length=64, eval_strategy="no",
        save_strategy="no", use_cpu=True, report_to="none", logging_steps=1, disable_tqdm=True,
        activation_checkpointing=False,
    )
    data_args = DataArguments(dataset_name=str(data), data_split="0,0,1", eval_split_size=0)
    trainer = run_ppo(ModelArguments(model_name_or_path="tiny:llama"), data_args, args)
    critic = trainer.unwrapped_critic.network
    assert isinstance(critic, CausalLMWithValueHead)
    assert trainer.state.global_step == 2
    scores = [entry["objective/scores"] for entry in trainer.state.log_history if "objective/scores" in entry]
    assert len(scores) == 2 and all(score == score for score in scores)  # finite reward-model scores
