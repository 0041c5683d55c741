"""Sampling pieces: the completion mask, the nucleus, the shared-prompt forward, and finished rows leaving."""

import pytest
import torch

from workbench import Config, load_task
from workbench.engine import rollout
from workbench.engine.grpo import token_log_probs
from workbench.engine.policy import load_policy, positions
from workbench.engine.rollout import _completion_mask, group_uniforms, sample_groups, sample_token

EOS = 1


def test_completion_mask_runs_through_the_first_eos():
    ids = torch.tensor([[5, 6, EOS, 7], [5, EOS, EOS, 0], [5, 6, 7, 8]])
    mask, truncated = _completion_mask(ids, (EOS,))
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_completion_mask_stops_at_any_of_several_eos_ids():
    ids = torch.tensor([[5, 9, 6, EOS], [5, 6, EOS, 9], [5, 6, 7, 8]])
    mask, truncated = _completion_mask(ids, (EOS, 9))
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_top_p_keeps_the_smallest_nucleus():
    # probs 0.5, 0.3, 0.2: with top_p 0.6 the nucleus is {0, 1} (0.5 < 0.6, 0.8 >= 0.6)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(2000, 1)
    torch.manual_seed(0)
    assert set(sample_token(logits, 1.0, 0.6, torch.rand(2000)).tolist()) == {0, 1}
    assert set(sample_token(logits, 1.0, 1.0, torch.rand(2000)).tolist()) == {0, 1, 2}
    assert set(sample_token(logits, 1.0, 0.4, torch.rand(2000)).tolist()) == {0}


def test_shared_prompt_log_probs_equal_a_full_forward():
    policy = load_policy(Config(precision="fp32"))
    task = load_task("arithmetic")
    prompts = [policy.encode_prompt(row["prompt"]) for row in task.batch(1, 3, seed=0)]
    prompts[1] = prompts[1][:3]  # a shorter prompt: left padding in the batch
    rollouts = sample_groups(policy, prompts, 4, 8, 1.0, 1.0)
    shared = policy.log_probs(*rollouts.model_inputs(), 4, 1.0)

    input_ids = torch.cat([rollouts.prompt_ids, rollouts.completion_ids], dim=1)
    mask = torch.cat([rollouts.prompt_mask, rollouts.completion_mask], dim=1)
    length = rollouts.completion_ids.shape[1]
    logits = policy.model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions(mask), logits_to_keep=length + 1
    ).logits
    full = token_log_probs(logits[:, :-1], rollouts.completion_ids, 1.0)
    on_tokens = rollouts.completion_mask.bool()
    torch.testing.assert_close(shared[on_tokens], full[on_tokens], atol=1e-4, rtol=0)


def test_sampling_leaves_the_base_weights_untouched():
    policy = load_policy(Config(precision="fp32"))
    for name, parameter in policy.model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_()  # a trained-looking adapter: merging changes the weights
    before = {n: p.clone() for n, p in policy.model.named_parameters()}
    sample_groups(policy, [policy.encode_prompt("12+34=")], 2, 4, 1.0, 1.0)
    assert all(torch.equal(p, before[n]) for n, p in policy.model.named_parameters())


def test_inverse_cdf_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2])
    logits = probs.log().expand(20000, -1)  # log 0 = -inf: never drawn
    counts = torch.bincount(sample_token(logits, 1.0, 1.0, torch.rand(20000)), minlength=4).float()
    assert counts[1] == 0
    assert counts / 20000 == pytest.approx(probs, abs=0.015)  # 3 standard errors of the largest
    nucleus = sample_token(logits, 1.0, 0.6, torch.rand(20000))  # top-p 0.6 keeps 0.5 and 0.3
    assert set(nucleus.tolist()) == {0, 2}
    edges = sample_token(probs.log().expand(2, -1), 1.0, 1.0, torch.tensor([0.0, 1 - 2**-24]))  # u's extremes
    assert edges.tolist() == [3, 0]  # 1 - u = 1 -> the last token with probability; 1 - u = tiny -> the first


def test_each_group_draws_from_its_own_seed():
    together = group_uniforms(2, 4, 8, [11, 22])
    assert torch.equal(together[4:], group_uniforms(1, 4, 8, [22]))  # the second group, sampled alone
    assert not torch.equal(together[:4], together[4:])


@pytest.mark.parametrize("leave_at", [0.0, 0.5])  # a row leaves as soon as it finishes; when half have
def test_finished_rows_leaving_the_batch_change_no_row(monkeypatch, leave_at):
    policy = load_policy(Config(precision="fp32"))
    task = load_task("format_following")  # tagged answers: completions of many lengths
    prompts = [policy.encode_prompt(row["prompt"]) for row in task.batch(1, 4, seed=0)]

    def sampled(share: float):
        monkeypatch.setattr(rollout, "LEAVE_AT", share)
        return sample_groups(policy, prompts, 4, 40, 1.0, 1.0, seeds=[1, 2, 3, 4])

    kept, left = sampled(2.0), sampled(leave_at)  # 2.0: no row ever leaves
    lengths = kept.completion_mask.sum(dim=1)
    assert lengths.min() < lengths.max()  # rows did finish at different tokens
    assert left.completions == kept.completions
    for name in ("completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(left, name), getattr(kept, name)), name
    # a smaller batch rounds in the last bits: 1.4e-6 at most here, where a token's log-prob is ~1
    torch.testing.assert_close(left.sampling_log_probs, kept.sampling_log_probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(left.entropies, kept.entropies, atol=1e-5, rtol=0)
