"""Response masking, score shaping, prompt preparation and KL controllers, by hand."""

import torch
from transformers import TrainerControl

from rlhf_recipes.models import build_byte_tokenizer, build_tiny_model, build_word_tokenizer
from rlhf_recipes.ppo import AdaptiveKLCallback, FixedKLCallback, PPOTrainerState
from rlhf_recipes.models.generation import left_pad, stop_mask, tokenize_prompts
from rlhf_recipes.ppo.experience import RunningMoments, shape_scores
from rlhf_recipes.ppo.rollout import Rollout, ValueModel
from rlhf_recipes.ppo.scoring import RewardScorer

EOS, PAD = 2, 0


def test_everything_after_the_first_stop_token_is_masked():
    responses = torch.tensor([
        [5, 6, EOS, 7, EOS],  # stops at t=2; later tokens (even a second EOS) are masked
        [EOS, 5, 6, 7, 8],  # empty answer: the stop token itself is its one real token
        [5, 6, 7, 8, 9],  # never stops: all tokens are real
    ])
    mask, has_stop = stop_mask(responses, [EOS])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert has_stop.tolist() == [True, True, False]
    mask, has_stop = stop_mask(responses, [7, 9])  # a custom stop token as well as several
    assert mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert stop_mask(responses, [])[1].tolist() == [False, False, False]


def test_missing_eos_penalty_applies_after_clipping():
    raw = torch.tensor([7.0, -1.0, 9.0, float("nan")])
    has_stop = torch.tensor([True, False, False, True])
    # clip to [-5, 5] -> [5, -1, 5, nan]; minus 1.5 where no stop token -> [5, -2.5, 3.5, nan]
    shaped = shape_scores(raw, has_stop, reward_clip=5.0, missing_eos_penalty=1.5)
    torch.testing.assert_close(shaped[:3], torch.tensor([5.0, -2.5, 3.5]))
    assert torch.isnan(shaped[3])  # a non-finite score stays visible to the non-finite check
    torch.testing.assert_close(shape_scores(raw[:3], has_stop[:3]), raw[:3])


def test_running_moments_match_the_statistics_of_everything_seen():
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 3.0]))
    moments.update(torch.tensor([5.0, 7.0, 9.0]))
    # all five values: mean 5, population variance (16 + 4 + 0 + 4 + 16) / 5 = 8
    assert abs(moments.mean - 5.0) < 1e-9 and abs(moments.var - 8.0) < 1e-9 and moments.count == 5
    torch.testing.assert_close(moments.normalize(torch.tensor([5.0 + 8**0.5])), torch.tensor([1.0]))


def test_prompts_keep_their_last_tokens_and_chat_prompts_get_the_template():
    tokenizer = build_word_tokenizer(["a", "b", "c", "d", "Human:", "Assistant:"])
    ids, truncated = tokenize_prompts(["a b c d", "a", [{"role": "user", "content": "b"}]], tokenizer, 3)
    vocab = tokenizer.get_vocab()
    assert ids[0] == [vocab["b"], vocab["c"], vocab["d"]]  # left-truncated: the end of the prompt stays
    assert ids[1] == [vocab["a"]]
    assert ids[2] == [vocab["Human:"], vocab["b"], vocab["Assistant:"]]  # HH template + generation prompt
    assert truncated == [0]
    input_ids, mask = left_pad(ids[:2], PAD)
    assert input_ids.tolist() == [ids[0], [PAD, PAD, vocab["a"]]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def _after_rollout(callback, kl_coef, kl, num_samples=64):
    state = PPOTrainerState(kl_coef=kl_coef)
    callback.on_rollout_end(None, state, TrainerControl(), rollout_stats={"kl": kl, "num_samples": num_samples})
    return state.kl_coef


def test_adaptive_kl_controller_moves_toward_the_target_both_ways():
    controller = AdaptiveKLCallback(target=6.0, horizon=10000)
    # KL 12 > 6: error clip(12/6 - 1) = +0.2 -> 0.1 * (1 + 0.2 * 64 / 10000) = 0.100128
    assert abs(_after_rollout(controller, 0.1, 12.0) - 0.100128) < 1e-12
    # KL 3 < 6: error clip(-0.5) = -0.2 -> 0.1 * (1 - 0.00128) = 0.099872
    assert abs(_after_rollout(controller, 0.1, 3.0) - 0.099872) < 1e-12
    # KL 6.6: error 0.1 (inside the clip) -> 0.1 * 1.00064
    assert abs(_after_rollout(controller, 0.1, 6.6) - 0.100064) < 1e-12
    assert _after_rollout(FixedKLCallback(), 0.3, 100.0) == 0.3  # the fixed controller never moves it


def test_value_model_reads_a_head_of_any_shape_at_every_position():
    """A custom head (no `.weight` of its own) in another dtype than the backbone still scores every token."""
    tokenizer = build_byte_tokenizer()
    model = build_tiny_model("tiny:opt", tokenizer, "seq-cls").eval()
    hidden_size = model.config.word_embed_proj_dim
    model.score = torch.nn.Sequential(torch.nn.Linear(hidden_size, 1)).to(torch.float64)
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        values = ValueModel(model)(ids, mask)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert values.shape == (1, 4) and values.dtype == torch.float64
    torch.testing.assert_close(values, model.score(hidden.double()).squeeze(-1))


def test_chat_rollouts_are_scored_on_the_text_the_reward_model_was_trained_on():
    """TRL's RewardTrainer scores the chat template over prompt + answer, which ends after the stop
    token (here the fallback template's `</s>\\n\\n`); a rollout ends at its stop token, or cut off."""
    tokenizer = build_byte_tokenizer()
    torch.manual_seed(0)
    reward_model = build_tiny_model("tiny:opt", tokenizer, "seq-cls").eval()
    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "name a colour"}]]
    answers, stopped = ["yes", "red or blu"], [True, False]
    prompt_ids, prompt_mask = left_pad(tokenize_prompts(prompts, tokenizer, 64)[0], tokenizer.pad_token_id)
    rows = [tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] * s
            for a, s in zip(answers, stopped)]
    width = max(map(len, rows))
    responses = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
    response_mask, has_stop = stop_mask(responses, [tokenizer.eos_token_id])
    rollout = Rollout([0, 1], prompt_ids, prompt_mask, responses, response_mask, has_stop)

    scores = RewardScorer(tokenizer, reward_model)(rollout, prompts)

    texts = [tokenizer.apply_chat_template(p + [{"role": "assistant", "content": a}], tokenize=False)
             for p, a in zip(prompts, answers)]
    assert all(text.endswith("</s>\n\n") for text in texts)
    with torch.no_grad():  # one row at a time: HF's own pooling at the last token, no padding involved
        expected = torch.cat([reward_model(**tokenizer(t, return_tensors="pt", add_special_tokens=False)).logits[:, 0]
                              for t in texts])
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_a_rendered_text_longer_than_the_reward_models_positions_keeps_its_end():
    tokenizer = build_byte_tokenizer()
    torch.manual_seed(0)
    reward_model = build_tiny_model("tiny:opt", tokenizer, "seq-cls", {"max_position_embeddings": 40}).eval()
    prompts = [[{"role": "user", "content": "a long question " * 4}]]
    prompt_ids, prompt_mask = left_pad(tokenize_prompts(prompts, tokenizer, 32)[0], tokenizer.pad_token_id)
    responses = torch.tensor([tokenizer("ok", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
    response_mask, has_stop = stop_mask(responses, [tokenizer.eos_token_id])
    rollout = Rollout([0], prompt_ids, prompt_mask, responses, response_mask, has_stop)

    scores = RewardScorer(tokenizer, reward_model)(rollout, prompts)

    text = tokenizer.apply_chat_template(prompts[0] + [{"role": "assistant", "content": "ok"}], tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 40
    with torch.no_grad():
        expected = reward_model(input_ids=torch.tensor([ids[-40:]])).logits[:, 0]
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
