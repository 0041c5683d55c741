"""Reading a run's groups in the app, in Debian's chromium, on a workspace with a finished run: the step view
(a row per group, sortable by reward spread; a click opens the group), one prompt before and after, and the
reward buckets (of every step, of a step range, a bad range refused) and one completion token by token
(log-probs, ratio, KL, entropy, push; opened by a click on its card in the group) in the Runs tab's views;
the live step view and token view in the Train tab; the buckets of a dry-run. Every number on the page is
checked against the store.

Screenshots go to $WORKBENCH_SCREENSHOTS (default: the test's temporary folder).
"""

import json
import os
import shutil
from pathlib import Path

import pytest
from chromium import CHROMIUM, assert_tokens_shown, fill_stable, wait_text
from conftest import serve_app
from test_browser_pages import open_page
from test_inspection import CONFIG, six_prompts

from workbench.engine.trainer import train
from workbench.events import RunStarted
from workbench.store.database import Store
from workbench.store.inspection import before_after, recurring_prompts, reward_buckets, step_groups

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"browser tests need Debian's chromium at {CHROMIUM}"),
]


def shown_rows(page, view: str) -> list[dict]:
    """The step view's rows as drawn: group id, rewards and advantages (JSON: exactly the stored floats)."""
    return page.locator(f"#{view} tr[data-group]").evaluate_all(
        """rows => rows.map(r => ({group: +r.dataset.group, rewards: JSON.parse(r.dataset.rewards),
                                   advantages: JSON.parse(r.dataset.advantages)}))"""
    )


def expected_rows(frame) -> list[dict]:
    return [
        {"group": g, "rewards": r, "advantages": a} for g, r, a in zip(frame.group_id, frame.rewards, frame.advantages)
    ]


def shown_buckets(page) -> list[tuple[list, int]]:
    return page.locator("#reward-buckets tr.bucket").evaluate_all(
        "rows => rows.map(r => [JSON.parse(r.dataset.values), +r.dataset.count])"
    )


def expected_buckets(buckets) -> list[list]:
    return [[[row.format_reward, row.correct], row.count] for row in buckets.itertuples()]


def test_the_step_view_before_after_and_buckets_show_the_stores_numbers(browser, tmp_path):
    task = six_prompts(_folder(tmp_path / "task"))
    events = list(train(CONFIG, task, tmp_path / "runs"))
    run_id = next(event.run_id for event in events if isinstance(event, RunStarted))
    store = Store(tmp_path / "runs", create=False)
    assert store.run(run_id)["status"] == "finished"
    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with serve_app(tmp_path / "runs") as url:
        page = open_page(browser, url)
        page.get_by_role("tab", name="Runs").click()
        wait_text(page, "#run-summary", run_id)

        # the step view: the latest step's groups, each completion's reward and advantage as stored
        view(page, "Groups")
        page.wait_for_selector("#step-groups .step-groups[data-step='3']")
        assert shown_rows(page, "step-groups") == expected_rows(step_groups(store, run_id, 3))
        page.locator("#step-groups-sort").get_by_text("reward spread (max - min)").click()
        page.wait_for_selector("#step-groups .step-groups[data-sort='spread']")
        by_spread = step_groups(store, run_id, 3, sort_by="spread")
        assert shown_rows(page, "step-groups") == expected_rows(by_spread)
        clicked = int(by_spread.group_id.iloc[1])
        page.locator(f"#step-groups tr[data-group='{clicked}'] td").nth(1).click()  # its prompt cell
        page.wait_for_selector(f"#run-group #live-step[data-step='3'][data-group='{clicked}']")
        assert page.input_value("#run-group-picker input") == str(clicked)
        group = store.group(run_id, 3, clicked)
        assert f"group mean reward {sum(group.rewards) / len(group.rewards):.2f}" in page.inner_text("#run-group")
        fill_stable(page, "#run-step-picker input", "1")
        page.wait_for_selector("#step-groups .step-groups[data-step='1'][data-sort='spread']")
        assert shown_rows(page, "step-groups") == expected_rows(step_groups(store, run_id, 1, sort_by="spread"))
        page.locator("#step-groups").screenshot(path=str(shots / "step-groups.png"))

        # the token view: a click on the shown group's third completion opens it, token by token, as stored
        page.wait_for_selector(f"#run-group #live-step[data-step='1'][data-group='{clicked}']")
        page.locator("#run-group #live-step div[style*='grid-template-columns'] > div").nth(2).click()
        page.wait_for_selector(f"#token-view .token-view[data-step='1'][data-group='{clicked}'][data-completion='2']")
        assert_tokens_shown(page, "token-view", store.token_view(run_id, 1, clicked, 2))
        assert page.input_value("#token-completion input") == "2"
        page.locator("#token-view").screenshot(path=str(shots / "token-view.png"))
        fill_stable(page, "#token-completion input", "3")  # the next one, by its number
        page.wait_for_selector(f"#token-view .token-view[data-step='1'][data-group='{clicked}'][data-completion='3']")
        assert_tokens_shown(page, "token-view", store.token_view(run_id, 1, clicked, 3))

        # before and after: the first recurring prompt at its first and latest step
        view(page, "Before / after")
        first = recurring_prompts(store, run_id).iloc[0]
        pair = before_after(store, run_id, first.prompt)
        page.wait_for_selector(f"#before-after .before-after[data-before='{pair.first_step}']")
        assert page.locator("#before-after .before-after").get_attribute("data-after") == str(pair.last_step)
        for step, side in ((pair.first_step, pair.before), (pair.last_step, pair.after)):
            cards = page.locator(f"#before-after .before-after-side[data-step='{step}'] .before-after-completion")
            assert cards.evaluate_all("cs => cs.map(c => c.dataset.reward)") == [f"{r:.2f}" for r in side.reward]
            assert cards.evaluate_all("cs => cs.map(c => +c.dataset.advantage)") == pytest.approx(
                side.advantage.tolist(), abs=1e-4
            )
        assert first.prompt in page.inner_text("#before-after")
        page.locator("#before-after").screenshot(path=str(shots / "before-after.png"))

        # the reward buckets: every step, then steps 2-3, then a range that runs backwards
        view(page, "Reward buckets")
        page.wait_for_selector("#reward-buckets .reward-buckets[data-completions='48']")
        assert shown_buckets(page) == expected_buckets(reward_buckets(store, run_id))
        fill_stable(page, "#bucket-steps textarea", "2-3")
        page.click("#bucket-show")
        page.wait_for_selector("#reward-buckets .reward-buckets[data-completions='32']")
        assert shown_buckets(page) == expected_buckets(reward_buckets(store, run_id, steps=(2, 3)))
        page.locator("#reward-buckets").screenshot(path=str(shots / "reward-buckets.png"))
        fill_stable(page, "#bucket-steps textarea", "3-2")
        page.click("#bucket-show")
        wait_text(page, "#reward-buckets", "runs backwards")
        page.screenshot(path=str(shots / "runs-inspection.png"), full_page=True)

        # the Train tab's live view: the newest run's latest step, a click opens the group
        page.get_by_role("tab", name="Train").click()
        page.wait_for_selector("#live-step-groups .step-groups[data-step='3']")
        assert shown_rows(page, "live-step-groups") == expected_rows(step_groups(store, run_id, 3))
        page.locator("#live-step-groups tr[data-group='2'] td").first.click()
        page.wait_for_selector("#live-group #live-step[data-step='3'][data-group='2']")
        # the live group's completions token by token: the first, then the one picked
        page.wait_for_selector("#live-token-view .token-view[data-step='3'][data-group='2'][data-completion='0']")
        assert_tokens_shown(page, "live-token-view", store.token_view(run_id, 3, 2, 0))
        fill_stable(page, "#live-token-completion input", "3")
        page.wait_for_selector("#live-token-view .token-view[data-step='3'][data-group='2'][data-completion='3']")
        assert_tokens_shown(page, "live-token-view", store.token_view(run_id, 3, 2, 3))
        fill_stable(page, "#live-step-picker input", "1")  # a step looked back at: its group 2's completion 3
        page.wait_for_selector("#live-token-view .token-view[data-step='1'][data-group='2'][data-completion='3']")
        assert_tokens_shown(page, "live-token-view", store.token_view(run_id, 1, 2, 3))
        page.screenshot(path=str(shots / "train-step-groups.png"), full_page=True)

        # a dry-run's groups, bucketed
        page.get_by_role("tab", name="Task & reward").click()
        page.click("#dry-run-button")
        page.wait_for_selector("#dry-run-result .reward-buckets", timeout=90_000)
        counts = page.locator("#dry-run-result tr.bucket").evaluate_all("rows => rows.map(r => +r.dataset.count)")
        values = json.loads(page.locator("#dry-run-result tr.bucket").first.get_attribute("data-values"))
        assert sum(counts) == int(page.locator("#dry-run-result .reward-buckets").get_attribute("data-completions"))
        assert len(values) == 1  # arithmetic, the first task: one reward function


def view(page, name: str) -> None:
    """Open one of the Runs tab's views."""
    page.get_by_role("tab", name=name, exact=True).click()


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
