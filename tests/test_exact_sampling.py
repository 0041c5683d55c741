"""Sampling draws from exactly the policy the update trains: bf16, tied embeddings, every EOS id,
and the chunked log-prob pass. Each sampled token's log-prob under the sampler is compared with
the one the update computes (TRL's sampling_logp_difference)."""

import json
import shutil

import pytest
import torch

from workbench import Config, Store, load_task, train
from workbench.engine import policy as policy_module
from workbench.engine.policy import load_policy
from workbench.engine.rollout import sample_groups
from workbench.engine.tiny import tiny_model_path

TASK = load_task("arithmetic")


def trained_looking(policy, scale=0.002):
    """A small, nonzero adapter, as after a few updates: B (and an embedding adapter's A and B) random."""
    torch.manual_seed(0)
    for name, parameter in policy.model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, scale)
        if "lora_embedding" in name:
            parameter.data.normal_(0, 0.1)
    return policy


def sampler_gap(policy, prompts=8, group_size=8, max_new_tokens=16):
    """max |log p_sampler - log p_train| over the sampled completion tokens."""
    torch.manual_seed(1)
    rows = TASK.batch(1, prompts, seed=0)
    rollouts = sample_groups(
        policy, [policy.encode_prompt(r["prompt"]) for r in rows], group_size, max_new_tokens, 1.0, 1.0
    )
    with torch.no_grad():
        trained = policy.log_probs(*rollouts.model_inputs(), group_size, 1.0)
    on_tokens = rollouts.completion_mask.bool()
    return (trained - rollouts.sampling_log_probs)[on_tokens].abs().max().item()


def test_bf16_sampling_is_the_trained_policy_not_a_rounded_fold():
    policy = trained_looking(load_policy(Config(precision="bf16")))
    assert not policy.fold_adapter  # W + delta in bf16 would round much of the delta away
    assert sampler_gap(policy) < 1e-3


def test_a_bf16_fold_would_lose_the_update():
    """What the check above guards against: folding a small adapter into bf16 weights (measured 0.15)."""
    policy = trained_looking(load_policy(Config(precision="bf16")))
    policy.fold_adapter = True
    assert sampler_gap(policy) > 0.02


def test_fp32_folds_exactly():
    policy = trained_looking(load_policy(Config(precision="fp32")))
    assert policy.fold_adapter
    assert sampler_gap(policy) < 1e-4


def test_an_adapter_on_a_tied_embedding_is_not_folded_into_lm_head():
    policy = trained_looking(load_policy(Config(precision="fp32", lora_target_modules=("q_proj", "embed_tokens"))))
    base = policy.model.get_base_model()
    assert base.model.embed_tokens.get_base_layer().weight is base.lm_head.weight  # tied
    assert not policy.fold_adapter
    assert sampler_gap(policy) < 1e-4


@pytest.mark.parametrize("precision, bound", [("bf16", 1e-3), ("fp32", 1e-4)])
def test_every_step_stores_the_sampling_gap(tmp_path, precision, bound):
    """|log p_sampler - log p_train| over each step's completion tokens: stored for every step, a mean no larger than
    its max, and small because sampling draws from the trained policy (measured on CPU: 0 in bf16, ~3e-6 in fp32)."""
    config = Config(steps=2, group_size=4, prompts_per_step=3, max_new_tokens=8, precision=precision)
    list(train(config, TASK, tmp_path))
    gaps = Store(tmp_path).query("SELECT sampling_logp_diff_mean, sampling_logp_diff_max FROM steps ORDER BY step")
    mean, most = gaps.sampling_logp_diff_mean, gaps.sampling_logp_diff_max
    assert len(gaps) == 2 and mean.notna().all() and most.notna().all()
    assert (mean <= most + 1e-12).all()  # the slack is rounding: the mean of equal gaps may land an ulp above them
    assert (most < bound).all()


def test_sampling_stops_at_every_eos_id_the_generation_config_declares(tmp_path):
    """Qwen2.5-Instruct declares two EOS ids; here the tiny model is told that '7' ends a completion too."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_path(), folder)
    generation = json.loads((folder / "generation_config.json").read_text())
    policy = load_policy(Config(model=str(tiny_model_path())))
    seven = policy.tokenizer.convert_tokens_to_ids("7")
    generation["eos_token_id"] = [policy.tokenizer.eos_token_id, seven]
    (folder / "generation_config.json").write_text(json.dumps(generation))

    policy = load_policy(Config(model=str(folder)))
    assert policy.eos_token_ids == (policy.tokenizer.eos_token_id, seven)
    torch.manual_seed(0)
    rows = TASK.batch(1, 16, seed=0)
    rollouts = sample_groups(policy, [policy.encode_prompt(r["prompt"]) for r in rows], 8, 8, 1.0, 1.0)
    ids = rollouts.completion_id_lists
    stopped_at_seven = [c for c in ids if c[-1] == seven]
    assert stopped_at_seven  # the tiny model writes 7s in its sums
    assert all(seven not in c[:-1] and policy.tokenizer.eos_token_id not in c[:-1] for c in ids)
    assert all(not t for c, t in zip(ids, rollouts.truncated.tolist()) if c[-1] == seven)


def test_chunked_log_probs_equal_one_pass_in_value_and_gradient(monkeypatch):
    """The log-prob pass projects at most LOGITS_CHUNK_BYTES of logits at a time, recomputing them in
    the backward pass; the numbers and the adapter's gradient are those of one unchunked pass. In fp64:
    in fp32 the kernels round a 5-token chunk's matmul and the whole pass's differently (up to 3.8e-6 in
    log-probs of size 7 on an AMX CPU), while in fp64 the two passes agree to the last fp32 digit."""
    policy = trained_looking(load_policy(Config(precision="fp32")), scale=0.05)
    policy.model.to(torch.float64)
    torch.manual_seed(0)
    rows = TASK.batch(1, 4, seed=0)
    rollouts = sample_groups(policy, [policy.encode_prompt(r["prompt"]) for r in rows], 4, 8, 1.0, 1.0)
    weights = torch.rand(rollouts.completion_ids.shape)

    def value_and_gradient():
        policy.model.zero_grad()
        log_probs = policy.log_probs(*rollouts.model_inputs(), 4, 1.0)
        (log_probs * weights).sum().backward()
        return log_probs.detach(), [p.grad.clone() for p in policy.trainable_parameters()]

    one_pass, one_pass_grads = value_and_gradient()
    vocabulary = policy.model.get_base_model().get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(policy_module, "LOGITS_CHUNK_BYTES", 4 * vocabulary * 5)  # 5 tokens a chunk
    chunked, chunked_grads = value_and_gradient()
    torch.testing.assert_close(chunked, one_pass, atol=1e-6, rtol=0)
    for a, b in zip(chunked_grads, one_pass_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def log_probs_and_gradient(policy, rollouts):
    policy.model.zero_grad()
    log_probs = policy.log_probs(*rollouts.model_inputs(), 8, 1.0)
    log_probs.sum().backward()
    return log_probs.detach(), [p.grad.clone() for p in policy.trainable_parameters()]


def test_the_reference_is_pefts_disabled_adapter_and_the_adapter_comes_back():
    """`Policy.adapter_off` skips peft's bookkeeping, not its numbers."""
    policy = trained_looking(load_policy(Config(precision="bf16")), scale=0.05)
    torch.manual_seed(0)
    rows = TASK.batch(1, 8, seed=0)
    rollouts = sample_groups(policy, [policy.encode_prompt(r["prompt"]) for r in rows], 8, 16, 1.0, 1.0)
    inputs = rollouts.model_inputs()
    reference = policy.reference_log_probs(*inputs, group_size=8, temperature=1.0)
    with torch.no_grad(), policy.model.disable_adapter():
        assert torch.equal(reference, policy.log_probs(*inputs, 8, 1.0))
    with torch.no_grad():
        trained = policy.log_probs(*inputs, 8, 1.0)
    assert (trained - reference).abs().max() > 0.01  # the adapter is on again
    torch.testing.assert_close(trained, rollouts.sampling_log_probs, atol=0, rtol=0)


@pytest.mark.slow
def test_the_adapter_takes_its_bf16_input_as_is_with_the_same_numbers():
    """peft's cast of each adapted layer's input to fp32 (undone at once by autocast) changes nothing
    but the memory and time it takes: without it, log-probs and gradients are bit for bit the same."""
    policy = trained_looking(load_policy(Config(precision="bf16")), scale=0.05)
    assert not any(layer.cast_input_dtype_enabled for layer in policy.adapted)
    torch.manual_seed(0)
    rows = TASK.batch(1, 8, seed=0)
    rollouts = sample_groups(policy, [policy.encode_prompt(r["prompt"]) for r in rows], 8, 16, 1.0, 1.0)
    kept, kept_gradient = log_probs_and_gradient(policy, rollouts)
    for layer in policy.adapted:
        layer.cast_input_dtype_enabled = True
    cast, cast_gradient = log_probs_and_gradient(policy, rollouts)
    assert torch.equal(kept, cast)
    assert all(torch.equal(a, b) for a, b in zip(kept_gradient, cast_gradient))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only")
def test_bf16_sampling_on_cuda_draws_from_the_trained_policy(tmp_path):
    """On a GPU the decode and the update run different attention kernels, so the gap is small, not 0."""
    config = Config(steps=1, group_size=4, prompts_per_step=3, max_new_tokens=8, device="cuda")
    list(train(config, TASK, tmp_path))
    gap = Store(tmp_path).query("SELECT sampling_logp_diff_mean FROM steps").sampling_logp_diff_mean.item()
    assert gap < 1e-2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_length_buckets_give_each_completion_the_numbers_of_one_padded_pass(monkeypatch, precision):
    """Completions of similar length go through the decoder together, each bucket cut to its own longest.
    In bf16 every log-prob is bit for bit that of one pass with all rows padded to the longest, and the
    sampler's: its kernels treat each row alone. In fp32 a matmul's rows round by the batch's shape, in the
    last bits (here up to 1.4e-6), as with any other batch size. The adapter's gradient sums the same terms
    in another order."""
    policy = trained_looking(load_policy(Config(precision=precision)), scale=0.05)
    torch.manual_seed(0)
    rows = TASK.batch(1, 4, seed=0)
    rollouts = sample_groups(policy, [policy.encode_prompt(r["prompt"]) for r in rows], 8, 16, 1.0, 1.0)
    lengths = rollouts.num_tokens.tolist()
    assert len(policy_module.length_buckets(lengths, 0)) >= 3, lengths  # completions of several lengths

    monkeypatch.setattr(policy_module, "PASS_TOKENS", 10**9)  # one pass, every row padded to the longest
    one_pass, one_pass_gradient = log_probs_and_gradient(policy, rollouts)
    monkeypatch.setattr(policy_module, "PASS_TOKENS", 0)  # a pass for each length
    bucketed, bucketed_gradient = log_probs_and_gradient(policy, rollouts)
    on_tokens = rollouts.completion_mask.bool()
    tolerance = dict(atol=0, rtol=0) if precision == "bf16" else dict(atol=1e-5, rtol=0)
    torch.testing.assert_close(bucketed, one_pass, **tolerance)
    torch.testing.assert_close(bucketed[on_tokens], rollouts.sampling_log_probs[on_tokens], **tolerance)
    for a, b in zip(bucketed_gradient, one_pass_gradient):
        assert (a - b).norm() <= (1e-2 if precision == "bf16" else 1e-5) * b.norm()
