"""The token view's numbers: every trained completion's per-token log-probs (policy and reference),
ratio, clipping, KL term and entropy are stored, and they are the numbers the update used.

Proves: at step 1 the stored log-probs are the base model's, recomputed here from the stored token
ids (the adapter starts at B = 0, so the policy and the reference agree and KL is 0); with four
updates per batch the later ratios move and the clip marks exactly the tokens where it cut the
gradient; the KL column is exp(d) - d - 1 of the stored log-probs; `contribution` is A x ratio
where unclipped; and `log_token_stats` off stores none. `python -m workbench tokens` prints the stored
numbers, and refuses what is not there by name.
"""

import math

import pytest
import torch

from workbench import Config, Store, load_task, train
from workbench.cli import main
from workbench.engine.policy import load_policy

SMALL = dict(prompts_per_step=2, group_size=4, precision="fp32")


def trained(workspace, **settings) -> str:
    events = list(train(Config(**SMALL, **settings), load_task("arithmetic"), workspace))
    return events[0].run_id


def test_step_one_stores_the_base_models_log_probs(tmp_path):
    run_id = trained(tmp_path, steps=1)
    store = Store(tmp_path)
    rollouts = store.query("SELECT * FROM rollouts ORDER BY group_id, sample_idx")
    tokens = store.query("SELECT * FROM tokens ORDER BY group_id, sample_idx")
    assert len(tokens) == len(rollouts) == 8
    assert tokens.logprob.map(len).tolist() == rollouts.num_tokens.tolist()

    policy = load_policy(Config(**SMALL))
    for group_id, group in rollouts.groupby("group_id"):
        prompt = torch.tensor([policy.encode_prompt(group.prompt.iloc[0])] * 4)  # (G, Lp)
        width = int(group.num_tokens.max())
        ids = [list(ids) + [policy.tokenizer.pad_token_id] * (width - len(ids)) for ids in group.completion_ids]
        mask = torch.tensor([[1] * n + [0] * (width - n) for n in group.num_tokens])
        expected = policy.log_probs(prompt, torch.ones_like(prompt), torch.tensor(ids), mask, 4, 1.0)  # (G, T)
        with torch.no_grad():  # one plain forward over prompt + completion
            logits = policy.model(input_ids=torch.cat([prompt, torch.tensor(ids)], dim=1)).logits  # (G, Lp + T, V)
        predicting = logits[:, prompt.shape[1] - 1 : -1].float()  # (G, T, V) the positions that predict each token
        log_p = torch.log_softmax(predicting, dim=-1)  # at temperature 1
        entropies = -(log_p.exp() * log_p).sum(dim=-1)  # (G, T)
        for k, stored in enumerate(tokens[tokens.group_id == group_id].itertuples()):
            n = int(group.num_tokens.iloc[k])
            assert list(stored.logprob) == pytest.approx(expected[k, :n].tolist(), abs=1e-5)
            assert list(stored.ref_logprob) == pytest.approx(list(stored.logprob), abs=1e-6)  # B = 0
            assert max(stored.kl) < 1e-6 and list(stored.ratio) == pytest.approx([1.0] * n)
            assert not any(stored.clipped)
            assert list(stored.entropy) == pytest.approx(entropies[k, :n].tolist(), abs=1e-4)
            assert 0 < max(stored.entropy) <= math.log(logits.shape[-1])  # at most uniform over the vocabulary

    view = store.token_view(run_id, 1, 0, 0)
    assert len(view) == rollouts.num_tokens.iloc[0]
    assert view.token.tolist() == policy.tokenizer.batch_decode([[t] for t in rollouts.completion_ids.iloc[0]])
    assert view.contribution.tolist() == pytest.approx([rollouts.advantage.iloc[0]] * len(view))


def test_later_passes_move_the_ratio_and_the_clip_marks_where_it_cut(tmp_path):
    run_id = trained(tmp_path, steps=2, num_iterations=4, learning_rate=0.05)
    store = Store(tmp_path)
    rows = store.query(
        "SELECT t.*, r.advantage FROM tokens t JOIN rollouts r USING (run_id, step, group_id, sample_idx)"
    )
    ratios = [r for row in rows.ratio for r in row]
    assert max(abs(r - 1) for r in ratios) > 0.2  # four passes at a high learning rate move the policy
    eps = Config().clip_epsilon
    for row in rows.itertuples():
        for ratio, clipped in zip(row.ratio, row.clipped):
            cut = (row.advantage > 0 and ratio > 1 + eps) or (row.advantage < 0 and ratio < 1 - eps)
            assert clipped == cut or abs(abs(ratio - 1) - eps) < 1e-6  # at the boundary either reading is fair
        for lp, ref, kl in zip(row.logprob, row.ref_logprob, row.kl):
            d = ref - lp
            assert kl == pytest.approx(math.exp(d) - d - 1, abs=1e-5)
    assert any(c for row in rows.clipped for c in row)

    step, group_id, sample_idx = rows.loc[rows.clipped.map(any).idxmax(), ["step", "group_id", "sample_idx"]]
    view = store.token_view(run_id, int(step), int(group_id), int(sample_idx))
    advantage = rows[(rows.step == step) & (rows.group_id == group_id) & (rows.sample_idx == sample_idx)].advantage
    expected = [0.0 if c else advantage.iloc[0] * r for r, c in zip(view.ratio, view.clipped)]
    assert view.contribution.tolist() == pytest.approx(expected, abs=1e-6)


def test_token_stats_can_be_turned_off(tmp_path, capsys):
    run_id = trained(tmp_path, steps=1, log_token_stats=False, beta=0.0)
    store = Store(tmp_path)
    assert store.query("SELECT count(*) AS n FROM tokens").n.item() == 0
    assert store.token_view(run_id, 1, 0, 0).empty
    assert len(store.query("SELECT * FROM rollouts")) == 8  # the rest is stored as ever
    assert main(["tokens", run_id, "--workspace", str(tmp_path)]) == 2
    assert f"run {run_id} stored no token stats: it ran with log_token_stats off" in capsys.readouterr().err
    from workbench.ui.token_view import stored_tokens_html  # the app's token view gives the same reasons

    assert "it ran with log_token_stats off" in stored_tokens_html(store, run_id, 1, 0, 0)
    assert f"step 1 of run {run_id} has groups 0-1, not 9" in stored_tokens_html(store, run_id, 1, 9, 0)


def test_the_tokens_command_prints_the_stored_numbers(tmp_path, capsys):
    run_id = trained(tmp_path, steps=2, num_iterations=2)
    store = Store(tmp_path)
    assert main(["tokens", run_id, "--workspace", str(tmp_path), "--group", "1", "--completion", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = store.query("SELECT * FROM rollouts WHERE step = 2 AND group_id = 1 AND sample_idx = 3").iloc[0]
    assert (
        lines[0]
        == f"run {run_id}, step 2, group 1, completion 3: reward {row.reward:.3f}, advantage {row.advantage:+.3f}"
    )
    assert lines[1] == f"prompt: {row.prompt!r}" and lines[2] == f"completion: {row.completion!r}"
    assert lines[3].split() == ["token", "logprob", "ref_logprob", "ratio", "clipped", "kl", "entropy", "contribution"]
    expected = store.token_view(run_id, 2, 1, 3)
    printed = lines[4 : 4 + len(expected)]
    assert len(expected) == row.num_tokens and lines[4 + len(expected)].startswith("contribution = ")
    for line, token in zip(printed, expected.itertuples()):
        words = line.split()  # the token's repr may hold spaces: the numbers are the last six words
        assert ("*" in words) == bool(token.clipped)
        numbers = [float(word) for word in [w for w in words if w != "*"][-6:]]
        assert numbers == pytest.approx(
            [token.logprob, token.ref_logprob, token.ratio, token.kl, token.entropy, token.contribution], abs=1e-4
        )
    assert expected.ratio.sub(1).abs().max() > 1e-4  # the second pass moved the ratio: the numbers are not all 1


def test_the_tokens_command_names_what_is_not_there(tmp_path, capsys):
    run_id = trained(tmp_path, steps=1)
    for arguments, problem in [
        (["nope-1"], "no run 'nope-1' in workspace"),
        ([run_id, "--step", "4"], f"run {run_id} has no step 4 stored (its only step: 1)"),
        ([run_id, "--group", "5"], f"step 1 of run {run_id} has groups 0-1, not 5"),
        ([run_id, "--completion", "4"], "group 0 of step 1 has completions 0-3, not 4"),
    ]:
        assert main(["tokens", *arguments, "--workspace", str(tmp_path)]) == 2
        assert problem in capsys.readouterr().err
