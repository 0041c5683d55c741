"""The LLM judge: P(yes) / (P(yes) + P(no)) from the base model's logits, batched, cached, timed in the store."""

import duckdb
import pytest
import torch

from workbench import Config, Store, load_task, train
from workbench.engine.batches import score
from workbench.engine.policy import load_policy
from workbench.engine.rollout import sample_groups
from workbench.rewards.judge import TEMPLATE, Judge, policy_judge_model
from workbench.rewards.scoring import RewardError, RewardSource, Scorer
from workbench.store.schema import SCHEMA_VERSION

SMALL = dict(group_size=2, prompts_per_step=2, max_new_tokens=8, checkpoint_every=100)
RUBRIC = "Is the answer correct?"
SHORT = "def short(completions, **kwargs):\n    return [float(len(c) < 20) for c in completions]\n"  # the worker's


@pytest.fixture(scope="module")
def policy():
    return load_policy(Config())


def by_hand(policy, prompt: str, completion: str) -> float:
    """The question through the chat template, the base model's softmax at its last position, P(yes) / (P(yes) +
    P(no)) over the first tokens of the yes and no words (the tiny model's characters: Y, y against N, n)."""
    tokenizer = policy.tokenizer
    question = TEMPLATE.format(prompt=prompt, completion=completion, rubric=RUBRIC)
    message = [{"role": "user", "content": question}]
    ids = tokenizer.apply_chat_template(message, add_generation_prompt=True, tokenize=True, return_dict=False)
    base = policy.model.get_base_model()
    with torch.no_grad(), policy.adapter_off():
        probs = base(input_ids=torch.tensor([list(ids)])).logits[0, -1].float().softmax(dim=-1)  # (V,)
    yes = probs[tokenizer.convert_tokens_to_ids(["Y", "y"])].sum()
    no = probs[tokenizer.convert_tokens_to_ids(["N", "n"])].sum()
    return (yes / (yes + no)).item()


def test_the_judges_score_is_p_yes_over_p_yes_plus_p_no_of_the_base_model(policy):
    judge = Judge(RUBRIC)
    pairs = [("What is 2+3?", "5"), ("What is 12+30?", "The answer is 42, I am quite sure of it."), ("1+1=", "3")]
    scores = judge.score(policy_judge_model(policy), *map(list, zip(*pairs)))  # one left-padded batch
    assert scores == pytest.approx([by_hand(policy, p, c) for p, c in pairs], abs=1e-5)
    assert all(0 < s < 1 for s in scores) and len(set(scores)) == 3


def test_the_judge_asks_the_base_model_whatever_the_adapter_learned(policy):
    judge, model = Judge(RUBRIC), policy_judge_model(policy)
    before = judge.score(model, ["What is 2+3?"], ["5"])
    saved = [p.detach().clone() for p in policy.trainable_parameters()]
    try:
        with torch.no_grad():
            for p in policy.trainable_parameters():
                p.add_(0.5)  # B was 0: the adapter now changes the policy
        assert Judge(RUBRIC).score(model, ["What is 2+3?"], ["5"]) == pytest.approx(before, abs=1e-6)
    finally:
        with torch.no_grad():
            for p, kept in zip(policy.trainable_parameters(), saved):
                p.copy_(kept)


def test_a_pair_judged_before_costs_no_forward(policy):
    judge, model = Judge(RUBRIC), policy_judge_model(policy)
    calls = []
    hook = policy.model.get_base_model().register_forward_hook(lambda *args: calls.append(1))
    try:
        first = judge.score(model, ["What is 2+3?", "What is 2+3?"], ["5", "5"])  # the same pair twice: one question
        again = judge.score(model, ["What is 2+3?"], ["5"])
    finally:
        hook.remove()
    assert len(calls) == 1 and judge.forwards == 1 and len(judge.cache) == 1
    assert first == [again[0], again[0]]


def test_chat_prompts_are_judged_by_their_messages(policy):
    judge = Judge(RUBRIC)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}]
    assert judge.question(chat, "5") == TEMPLATE.format(prompt="What is 2+3?", completion="5", rubric=RUBRIC)
    assert judge.score(policy_judge_model(policy), [chat], ["5"]) == pytest.approx(
        [by_hand(policy, "What is 2+3?", "5")]
    )


def test_a_template_must_hold_the_completion_and_name_only_the_three_fields():
    with pytest.raises(RewardError, match=r"reward.py: JUDGE_TEMPLATE must hold \{completion\}"):
        Judge(RUBRIC, "Is {prompt} good?")
    with pytest.raises(RewardError, match="it holds answer, completion"):
        Judge(RUBRIC, "{completion} {answer}")
    with pytest.raises(RewardError, match="double a brace meant as text"):
        Judge(RUBRIC, "{completion} {")
    source = RewardSource(f"JUDGE_RUBRIC = {RUBRIC!r}\nJUDGE_TEMPLATE = 'Q: {{prompt}}'\n{SHORT}", "polite.py")
    with pytest.raises(RewardError, match="polite.py: JUDGE_TEMPLATE must hold"):
        Scorer(source, [])


def test_the_judge_scores_nothing_where_no_model_is_loaded_and_the_policys_base_in_a_dry_run(policy):
    source = RewardSource(f"JUDGE_RUBRIC = {RUBRIC!r}\n{SHORT}")
    with Scorer(source, []) as scorer:
        assert scorer.names == ["short", "judge"]
        assert scorer.score([{"prompt": "1+1="}], ["2"]).values == {"short": [1.0], "judge": [None]}  # a reward tried
        config = Config(**SMALL)
        rows = [{"prompt": "What is 2+3?"}]
        rollouts = sample_groups(policy, [policy.encode_prompt("What is 2+3?")], 2, 8, 1.0, 1.0)
        scores = score(scorer, rows, rollouts, config, step=1, policy=policy)  # a dry run's and the lab's way in
    expected = [by_hand(policy, "What is 2+3?", c) for c in rollouts.completions]
    assert scores.values["judge"] == pytest.approx(expected, abs=1e-5)
    assert scorer.models.step_seconds[1] > 0


def test_a_run_with_the_judge_stores_its_values_and_its_seconds(tmp_path):
    task = load_task("arithmetic")
    task = task.with_rewards(RewardSource(task.rewards.text + f"\nJUDGE_RUBRIC = {RUBRIC!r}\n", "reward.py"))
    config = Config(steps=2, reward_weights={"judge": 2.0}, **SMALL)
    events = list(train(config, task, tmp_path))
    assert type(events[-1]).__name__ == "RunFinished", events[-1]
    store = Store(tmp_path)
    steps = store.query("SELECT step, seconds_score, seconds_judge FROM steps ORDER BY step")
    assert (steps.seconds_judge > 0).all() and (steps.seconds_judge <= steps.seconds_score).all()
    values = store.query(
        """SELECT r.reward, c.value AS correct, j.value AS judge
           FROM rollouts r JOIN reward_values c USING (run_id, step, group_id, sample_idx)
           JOIN reward_values j USING (run_id, step, group_id, sample_idx)
           WHERE c.name = 'correct' AND j.name = 'judge'"""
    )
    assert len(values) == 8 and values.judge.between(0, 1).all()
    assert values.reward.tolist() == pytest.approx((values.correct + 2.0 * values.judge).tolist())


def test_a_run_without_a_judge_stores_no_judge_seconds(tmp_path):
    list(train(Config(steps=1, **SMALL), load_task("arithmetic"), tmp_path))
    assert Store(tmp_path).query("SELECT seconds_judge FROM steps").seconds_judge.isna().all()


def test_an_older_store_gains_the_seconds_judge_column(tmp_path):
    Store(tmp_path)  # a new store, at the current version
    with duckdb.connect(str(tmp_path / "store.duckdb")) as con:
        con.execute("ALTER TABLE steps DROP COLUMN seconds_judge")
        con.execute("UPDATE meta SET value = '8' WHERE key = 'schema_version'")
    store = Store(tmp_path)
    assert "seconds_judge" in store.query("SELECT * FROM steps").columns
    assert store.query("SELECT value FROM meta WHERE key = 'schema_version'").value[0] == str(SCHEMA_VERSION)
