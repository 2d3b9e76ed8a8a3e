"""Rows grouped by length and cut to their real columns (`ppo.microbatches`): the same rows, every real
token kept, and the same rollout passes, gradients and metrics as the untrimmed, ungrouped computation."""

import pytest
import torch
from datasets import Dataset
from transformers import OPTForSequenceClassification

from rlhf_recipes.models import build_byte_tokenizer
from rlhf_recipes.models.generation import SamplingConfig, left_pad, logprobs_from_logits
from rlhf_recipes.ppo import PPOTrainer, PtxCallback, microbatches
from rlhf_recipes.ppo.experience import make_experience
from rlhf_recipes.ppo.losses import entropy_from_logits, masked_mean, policy_loss, ptx_loss, value_loss
from rlhf_recipes.ppo.rollout import Rollout, ValueModel, collect_rollout, response_logits
from rlhf_recipes.ppo.scoring import RewardScorer

PROMPT_LENGTHS = [1, 9, 2, 12, 3, 7, 1, 10]
RESPONSE_LENGTHS = [6, 1, 3, 2, 6, 1, 4, 2]


def padded_batch(tiny, prompt_lengths, response_lengths, seed=0):
    """Left-padded prompts and right-padded responses of the given lengths, random word tokens."""
    generator = torch.Generator().manual_seed(seed)
    words = tiny.tokenizer.convert_tokens_to_ids(["a", "b", "c", "d", "x", "y"])

    def tokens(n):
        return [words[i] for i in torch.randint(len(words), (n,), generator=generator).tolist()]

    prompt_ids, prompt_mask = left_pad([tokens(n) for n in prompt_lengths], tiny.tokenizer.pad_token_id)
    width = max(response_lengths)
    response_mask = (torch.arange(width) < torch.tensor(response_lengths).unsqueeze(1)).long()
    responses = torch.tensor([tokens(width) for _ in response_lengths]).masked_fill(response_mask == 0,
                                                                                    tiny.tokenizer.pad_token_id)
    return prompt_ids, prompt_mask, responses, response_mask


def test_grouping_is_a_permutation_of_the_rows_in_groups_of_similar_length():
    lengths = torch.tensor([5, 40, 7, 33, 12, 8, 41, 6, 20, 3])
    rows = torch.tensor([9, 1, 4, 6, 0, 3, 8])
    groups = microbatches.length_grouped(rows, lengths[rows], 3)
    assert [len(g) for g in groups] == [3, 3, 1]
    assert sorted(torch.cat(groups).tolist()) == sorted(rows.tolist())
    # longest first: every row of a group is at least as long as every row of the next
    for longer, shorter in zip(groups, groups[1:]):
        assert lengths[longer].min() >= lengths[shorter].max()
    # rows that fit one group keep their order
    assert microbatches.length_grouped(rows, lengths[rows], 7)[0].tolist() == rows.tolist()


def test_packing_fills_groups_longest_first_up_to_the_positions_of_size_untrimmed_rows():
    lengths = torch.tensor([5, 40, 7, 33, 12, 8, 41, 6, 20, 3])
    rows = torch.tensor([9, 1, 4, 6, 0, 3, 8, 2, 5])
    groups = microbatches.packed(rows, lengths[rows], 2, 48)  # 96 positions per group
    assert [lengths[g].tolist() for g in groups] == [[41, 40], [33, 20], [12, 8, 7, 5, 3]]
    assert sorted(torch.cat(groups).tolist()) == sorted(rows.tolist())
    assert len(groups) <= len(microbatches.length_grouped(rows, lengths[rows], 2))
    # rows that fit in one group keep their order
    assert microbatches.packed(rows, lengths[rows], 2, 200)[0].tolist() == rows.tolist()


def test_a_chunk_keeps_every_real_token_and_only_grouping_shrinks_the_computed_positions(tiny):
    prompt_ids, prompt_mask, responses, response_mask = padded_batch(tiny, PROMPT_LENGTHS, RESPONSE_LENGTHS)
    parts = microbatches.chunks(prompt_mask, response_mask, 2)
    assert sorted(torch.cat([c.rows for c in parts]).tolist()) == list(range(len(PROMPT_LENGTHS)))
    for chunk in parts:
        ids, mask = chunk.sequences(prompt_ids, responses), chunk.sequences(prompt_mask, response_mask)
        for row, cut_ids, cut_mask in zip(chunk.rows.tolist(), ids, mask):
            whole_ids = torch.cat([prompt_ids[row], responses[row]])
            whole_mask = torch.cat([prompt_mask[row], response_mask[row]])
            assert cut_ids[cut_mask.bool()].tolist() == whole_ids[whole_mask.bool()].tolist()
        # left-padded: every row ends in the last column, and the longest one fills the chunk
        assert mask[:, -1].all() and mask.shape[1] == int(mask.sum(1).max())
        assert (mask.cumsum(1) == torch.arange(1, mask.shape[1] + 1) - (mask.shape[1] - mask.sum(1, keepdim=True))
                ).logical_or(mask == 0).all()
        # per-response-token tensors in the same layout: the response columns of the cut sequences
        real = chunk.response(response_mask).bool()
        assert real.sum(1).tolist() == response_mask[chunk.rows].sum(1).tolist()
        assert chunk.response(responses)[real].tolist() == ids[:, -chunk.response_width :][real].tolist()
    computed = sum(c.sequences(prompt_mask, response_mask).numel() for c in parts)
    rows = torch.arange(len(PROMPT_LENGTHS))
    ungrouped = sum(microbatches.Chunk.of(r, prompt_mask, response_mask).sequences(prompt_mask, response_mask).numel()
                    for r in rows.split(2))
    real = int(prompt_mask.sum() + response_mask.sum())
    assert real < computed < ungrouped < prompt_mask.numel() + response_mask.numel()


def test_rollout_passes_give_the_untrimmed_logprobs_values_and_scores(tiny):
    prompts = [" ".join(["a", "b", "c", "d"][i % 4] for i in range(n)) for n in PROMPT_LENGTHS]
    prompt_ids, prompt_mask = left_pad([tiny.tokenizer(p)["input_ids"] for p in prompts], tiny.tokenizer.pad_token_id)
    policy, ref = tiny.policy(seed=0).eval(), tiny.policy(seed=5).eval()
    critic = ValueModel(tiny.value(seed=1)).eval()
    config = SamplingConfig(max_new_tokens=8, pad_token_id=tiny.tokenizer.pad_token_id, temperature=0.7,
                            stop_token_ids=(tiny.yes,))
    torch.manual_seed(0)
    rollout = collect_rollout(list(range(len(prompts))), prompt_ids, prompt_mask, policy, ref, torch.no_grad,
                              critic, config, chunk_size=3)
    mask = rollout.response_mask.bool()
    assert len(set(rollout.response_mask.sum(1).tolist())) > 2  # responses of different lengths
    width = rollout.responses.shape[1]
    with torch.no_grad():
        logits = response_logits(ref, rollout.input_ids, rollout.attention_mask, width, keep_only=False)
        ref_logprobs = logprobs_from_logits(logits.float() / 0.7, rollout.responses)
        values = critic(rollout.input_ids, rollout.attention_mask)[:, -width - 1 : -1]
    torch.testing.assert_close(rollout.ref_logprobs[mask], ref_logprobs[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rollout.values[mask], values[mask], rtol=1e-5, atol=1e-5)
    # never read after a response, but finite there: the trainer checks whole tensors for non-finite values
    assert torch.isfinite(rollout.ref_logprobs).all() and torch.isfinite(rollout.values).all()

    reward_model = tiny.value(seed=3).eval()
    scores = RewardScorer(tiny.tokenizer, reward_model, chunk_size=3)(rollout, prompts)
    last = prompt_ids.shape[1] + rollout.response_mask.sum(1) - 1
    with torch.no_grad():
        expected = ValueModel(reward_model)(rollout.input_ids, rollout.attention_mask).gather(1, last.unsqueeze(1))
    torch.testing.assert_close(scores, expected.squeeze(1), rtol=1e-5, atol=1e-5)

    # re-tokenised text (left-padded, no response part), read against HF's own pooling of right-padded text
    rm_tokenizer = build_byte_tokenizer()
    torch.manual_seed(4)
    byte_model = OPTForSequenceClassification(
        tiny.config(vocab_size=len(rm_tokenizer), pad_token_id=0, max_position_embeddings=128)
    ).eval()
    scorer = RewardScorer(tiny.tokenizer, byte_model, reward_tokenizer=rm_tokenizer, chunk_size=3)
    answers = scorer.decode(rollout)
    texts = [" ".join(x for x in (p, a) if x) + ("</s>" if s else "")
             for p, a, s in zip(prompts, answers, rollout.has_stop.tolist())]
    with torch.no_grad():
        expected = byte_model(**rm_tokenizer(texts, padding=True, return_tensors="pt")).logits.squeeze(-1)
    torch.testing.assert_close(scorer(rollout, prompts), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pack, sizes", [(True, [2, 3, 3]), (False, [2, 2, 2, 2])])
def test_update_gives_the_gradients_and_metrics_of_the_untrimmed_ungrouped_minibatch(tiny, tmp_path, monkeypatch,
                                                                                      pack, sizes):
    # one minibatch of 8 rows, gradient_accumulation_steps 4: grouped by length and cut to their real columns,
    # packed into as few chunks as fit in the 2 x 18 positions of two untrimmed rows (lengths 14 12 | 10 9 8 |
    # 7 5 5), or in 4 microbatches of 2 (DeepSpeed and FSDP launches); the loss has the same gradients, and
    # PPO-ptx reads one ptx batch per microbatch of 2 rows (4 of them) however many chunks there are
    seen_sizes = []
    real_chunks = microbatches.chunks

    def chunks(*args, **kwargs):
        parts = real_chunks(*args, **{**kwargs, "pack": pack})
        seen_sizes.extend(len(c.rows) for c in parts)
        return parts

    monkeypatch.setattr(microbatches, "chunks", chunks)
    args = tiny.args(tmp_path, per_device_train_batch_size=8, num_mini_batches=1, gradient_accumulation_steps=4,
                     num_ppo_epochs=1, temperature=0.7, max_prompt_length=12, response_length=6, vf_coef=0.3,
                     cliprange=0.1, cliprange_value=0.05, max_grad_norm=1e9)
    ptx = PtxCallback(Dataset.from_list([{"text": t} for t in ("yes no yes", "a b c d x", "x y", "no no", "c d a b",
                                                                "y y x", "b a", "d c b a yes")]), 0.5)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                         reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset(), callbacks=[ptx])
    ptx.on_train_begin(args, trainer.state, trainer.control, processing_class=tiny.tokenizer)  # what train() does
    ptx_steps = []
    real_extra = ptx.compute_extra_actor_loss

    def recorded_extra(*positional, **event):
        ptx_steps.append(event["micro_step"])
        return real_extra(*positional, **event)

    ptx.compute_extra_actor_loss = recorded_extra
    actor, critic = trainer.unwrapped_actor, trainer.unwrapped_critic
    prompt_ids, prompt_mask, responses, response_mask = padded_batch(tiny, PROMPT_LENGTHS, RESPONSE_LENGTHS)
    ids, attention = torch.cat([prompt_ids, responses], 1), torch.cat([prompt_mask, response_mask], 1)
    width, mask = responses.shape[1], response_mask.float()

    def untrimmed():
        logits = response_logits(actor, ids, attention, width, keep_only=False).float() / args.temperature
        return logits, logprobs_from_logits(logits, responses), critic(ids, attention)[:, -width - 1 : -1].float()

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # old logprobs and values off the current ones: some ratios and values are clipped
        _, logprobs, values = untrimmed()
        old_logprobs = logprobs + 0.3 * torch.randn(logprobs.shape, generator=generator)
        old_values = values + 0.2 * torch.randn(values.shape, generator=generator)
    rollout = Rollout(list(range(8)), prompt_ids, prompt_mask, responses, response_mask,
                      torch.zeros(8, dtype=torch.bool), old_logprobs, old_logprobs.clone(), old_values)
    scores = torch.randn(8, generator=generator)
    kl = 0.1 * torch.randn(logprobs.shape, generator=generator) * mask
    experience = make_experience(rollout, scores, scores, kl, 0.05, args)

    logits, logprobs, values = untrimmed()
    pg_loss, clipfrac, approxkl = policy_loss(logprobs, old_logprobs, experience.advantages, mask, args.cliprange)
    vf_loss, vf_clipfrac = value_loss(values, old_values, experience.returns, mask, args.cliprange_value)
    params = {name: trainer._trainable[name] for name in ("actor", "critic")}
    flat = [p for group in params.values() for p in group]
    ptx_losses = []
    for step in range(4):
        event = {"micro_step": step, "num_micro_steps": 4, "process_index": 0, "num_processes": 1}
        ptx_ids, ptx_mask = ptx._batch(args, trainer.state, event, tiny.tokenizer.pad_token_id, "cpu")
        ptx_losses.append(ptx_loss(actor(input_ids=ptx_ids, attention_mask=ptx_mask).logits.float(), ptx_ids, ptx_mask))
    mean_ptx = sum(ptx_losses) / 4
    expected_grads = torch.autograd.grad(pg_loss + args.vf_coef * vf_loss + 0.5 * mean_ptx, flat)
    with torch.no_grad():
        expected = {"loss/policy": pg_loss, "loss/value": vf_loss, "loss/ptx": mean_ptx, "policy/approxkl": approxkl,
                    "policy/clipfrac": clipfrac, "val/clipfrac": vf_clipfrac,
                    "policy/entropy": masked_mean(entropy_from_logits(logits), mask),
                    "val/ratio": masked_mean(torch.exp(logprobs - old_logprobs), mask)}
    assert 0 < clipfrac < 1 and 0 < vf_clipfrac < 1

    seen = []
    real_step = trainer._optimizer_step

    def record_then_step():
        seen.append([p.grad.clone() for p in flat])
        return real_step()

    trainer._optimizer_step = record_then_step
    metrics = trainer._update(rollout, experience)
    assert seen_sizes == sizes and len(seen) == 1
    assert sorted(ptx_steps) == [0, 1, 2, 3]
    for got, want in zip(seen[0], expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(metrics[name], value, rtol=1e-5, atol=1e-6, msg=name)
