"""Sampling pieces: the completion mask, the nucleus, and the shared-prompt forward."""

import torch

from workbench import Config, load_task
from workbench.grpo import token_log_probs
from workbench.policy import load_policy, positions
from workbench.rollout import _completion_mask, sample_groups, sample_token

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
    assert set(sample_token(logits, 1.0, 0.6).tolist()) == {0, 1}
    assert set(sample_token(logits, 1.0, 1.0).tolist()) == {0, 1, 2}
    assert set(sample_token(logits, 1.0, 0.4).tolist()) == {0}


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
