"""The rollout store: whole steps, confined user SQL, named queries, readers while a run writes, crashes."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import duckdb
import pandas as pd
import pytest

from workbench import Config, Store, load_task, train
from workbench.events import StepFinished
from workbench.store.database import StoreError
from workbench.store.queries import NAMED_QUERIES, SQLError, named, named_sql, run_sql
from workbench.store.schema import SCHEMA_VERSION
from workbench.store.writer import COMMIT_SECONDS, StepWriter

SMALL = dict(group_size=4, prompts_per_step=3, max_new_tokens=8)


def write_groups(store, run_id, step, groups):
    store.write_steps([step_rows(run_id, step, groups)])


def step_rows(run_id, step, groups):
    """A step's rows by table from hand-made groups: [(prompt, [(completion, reward), ...]), ...]."""
    rollouts, values = [], []
    for g, (prompt, completions) in enumerate(groups):
        for k, (completion, reward) in enumerate(completions):
            key = dict(run_id=run_id, step=step, group_id=g, sample_idx=k)
            rollouts.append(
                key
                | dict(
                    prompt=prompt,
                    completion=completion,
                    reward=reward,
                    advantage=0.0,
                    num_tokens=len(completion),
                    truncated=False,
                )
            )
            values.append(key | dict(name="correct", value=reward))
    rewards = [r for _, c in groups for _, r in c]
    step_row = dict(run_id=run_id, step=step, reward_mean=sum(rewards) / len(rewards), reward_function_means="{}")
    return {"steps": [step_row], "rollouts": rollouts, "reward_values": values}


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path)
    store.create_run("r1", "hand", str(tmp_path), "tiny", {}, "")
    write_groups(store, "r1", 1, [("1+1=", [("2", 1.0), ("2", 1.0)]), ("2+2=", [("4", 1.0), ("5", 0.0)])])
    write_groups(store, "r1", 2, [("1+1=", [("2", 1.0), ("3", 0.0)]), ("3+3=", [("7", 0.0), ("7", 0.0)])])
    return store


def test_named_queries_by_hand(store):
    no_signal = named(store, "no_signal_groups")
    assert no_signal[["step", "group_id", "prompt"]].values.tolist() == [[2, 1, "3+3="], [1, 0, "1+1="]]
    per_function = named(store, "reward_per_function")
    assert per_function["mean"].tolist() == [0.75, 0.25]
    same_prompt = named(store, "same_prompt_across_steps")  # step 2's prompts, every step they came up
    assert same_prompt[["prompt", "step", "reward_mean"]].values.tolist() == [
        ["1+1=", 1, 1.0],
        ["1+1=", 2, 0.5],
        ["3+3=", 2, 0.0],
    ]
    best_worst = named(store, "best_and_worst")
    best, worst = best_worst[best_worst["rank"] == "best"], best_worst[best_worst["rank"] == "worst"]
    assert best["reward"].tolist() == [1.0, 0.0, 0.0, 0.0] and worst["reward"].tolist() == [0.0, 0.0, 0.0, 1.0]
    for name in NAMED_QUERIES:  # every named query runs, on the latest run and on a named one
        named(store, name)
        assert "'r1'" in named_sql(name, "r1")


def test_a_stored_group_the_runs_and_the_steps_read_back(store):
    group = store.group("r1", 1, 1)
    assert (group.prompt, group.completions, group.rewards) == ("2+2=", ["4", "5"], [1.0, 0.0])
    assert group.reward_values == {"correct": [1.0, 0.0]} and group.num_tokens == [1, 1]
    assert store.group("r1", 3, 0) is None
    runs = store.runs()
    assert runs[["run_id", "status", "last_step"]].values.tolist() == [["r1", "running", 2]]
    assert runs.reward_mean[0] == 0.25  # the latest step's: rewards 1, 0, 0, 0
    assert store.steps("r1").reward_function_means.tolist() == [{}, {}]
    chat = [{"role": "user", "content": "[1, 2] sums to?"}]
    write_groups(store, "r1", 3, [(json.dumps(chat), [("3", 1.0), ("4", 0.0)]), ("[1] sums to?", [("1", 1.0)])])
    assert store.group("r1", 3, 0).prompt == chat and store.group("r1", 3, 1).prompt == "[1] sums to?"
    assert store.groups("r1", 3) == [store.group("r1", 3, 0), store.group("r1", 3, 1)]  # a step's, in order
    assert store.groups("r1", 9) == []


def test_suspected_reward_hacking_flags_long_high_reward_completions(tmp_path):
    store = Store(tmp_path)
    store.create_run("r", "hand", str(tmp_path), "tiny", {}, "")
    normal = [("ok", 0.0)] * 9 + [("fine", 1.0)] * 9
    groups = [("p", normal[i : i + 6]) for i in range(0, 18, 6)] + [("q", [("yes " * 40, 1.0), ("no", 0.0)])]
    write_groups(store, "r", 1, groups)
    flagged = named(store, "suspected_reward_hacking")
    assert flagged["completion"].tolist() == ["yes " * 40]


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("DROP TABLE rollouts", "read-only"),
        ("DELETE FROM rollouts", "read-only"),
        ("UPDATE runs SET status = 'x'", "read-only"),
        ("COPY rollouts TO '/tmp/stolen.csv'", "outside the workspace"),
        ("ATTACH '/tmp/other.duckdb' AS other", "outside the workspace"),
        ("SELECT * FROM read_csv('/etc/passwd')", "outside the workspace"),
        ("SET enable_external_access = true", "locked"),
        ("SELECT 1; DROP TABLE runs", "read-only"),
        ("SELEC 1", "syntax error"),
        ("   ", "empty"),
    ],
)
def test_user_sql_cannot_change_data_or_touch_files(store, sql, words):
    with pytest.raises(SQLError) as error:
        run_sql(store, sql)
    assert words in str(error.value).lower()
    assert store.query("SELECT count(*) AS n FROM rollouts")["n"].item() == 8
    assert not os.path.exists("/tmp/stolen.csv")


def test_user_sql_is_bounded_in_rows_and_time(store):
    result = run_sql(store, "SELECT * FROM range(100)", max_rows=10)
    assert len(result.frame) == 10 and result.truncated and "first 10 rows" in result.message
    started = time.monotonic()
    with pytest.raises(SQLError, match="longer than 0.5 s"):
        run_sql(store, "SELECT count(*) FROM range(1000000000000) a, range(10) b", timeout=0.5)
    assert time.monotonic() - started < 5
    assert len(run_sql(store, "SELECT * FROM steps").frame) == 2  # still usable afterwards


def test_user_sql_is_bounded_in_memory_and_leaves_no_temporary_files(store, tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where each query's DuckDB spills
    with pytest.raises(SQLError, match=r"needed more than the 1 GB of memory \(then 1 GB of disk\) a query may use"):
        run_sql(store, "SELECT list(a.range * b.range) FROM range(30000) a, range(30000) b")  # 7 GB of integers
    with pytest.raises(SQLError, match="longer than 2 s"):  # a hash table past memory: it spills, then times out
        run_sql(store, "SELECT range % 40000000 AS k, count(*) FROM range(40000000) GROUP BY k ORDER BY k", timeout=2)
    assert list(temp.iterdir()) == []
    assert len(run_sql(store, "SELECT * FROM steps").frame) == 2


def test_user_sql_is_bounded_in_result_bytes(store):
    result = run_sql(store, "SELECT repeat('x', 100000) AS big FROM range(1000)", max_mb=1)
    assert len(result.frame) == 10 and result.truncated
    assert result.message.startswith("first 10 rows shown: the result passed the 1 MB a query may return")


def test_a_slow_query_holds_no_other_reader(store):
    slow = threading.Thread(
        target=lambda: pytest.raises(SQLError, run_sql, store, "SELECT count(*) FROM range(10000000000000)", timeout=5)
    )
    slow.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert run_sql(store, "SELECT 1 AS one").frame["one"].tolist() == [1]  # another user's query
    assert store.query("SELECT count(*) AS n FROM steps")["n"].item() == 2  # the app's own reads (live views)
    assert slow.is_alive() and time.monotonic() - started < 3  # answered while the slow query still ran
    slow.join()


def test_a_sql_error_says_where_it_is(store):
    with pytest.raises(SQLError) as error:
        run_sql(store, "SELECT step,\n  no_such + 1 FROM steps")
    message = str(error.value)
    assert message.splitlines()[0].endswith('Referenced column "no_such" not found in FROM clause! (line 2, column 3)')
    assert "LINE 2:   no_such + 1 FROM steps\n          ^" in message  # DuckDB's caret, kept for a fixed-width font
    long = "SELECT " + "1, " * 60 + "no_such FROM steps"  # DuckDB shows a window of a long line
    with pytest.raises(SQLError, match=r"\(line 1, column 188\)"):
        run_sql(store, long)


def test_export_to_parquet_and_csv(store, tmp_path):
    for fmt, read in (("parquet", pd.read_parquet), ("csv", pd.read_csv)):
        paths = store.export_run("r1", tmp_path / fmt, fmt)
        frames = {p.stem: read(p) for p in paths}
        assert len(frames["rollouts"]) == 8 and len(frames["reward_values"]) == 8
        assert frames["runs"]["run_id"].tolist() == ["r1"]


def test_a_newer_schema_is_refused_and_the_current_one_reopens(store):
    Store(store.workspace)  # reopening is fine
    with duckdb.connect(str(store.path)) as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(store.workspace)


@pytest.mark.slow
def test_readers_in_a_thread_and_another_process_while_a_run_writes(tmp_path):
    Store(tmp_path)
    reader_script = (
        "import sys, time\n"
        "from workbench import Store\n"
        "from workbench.store.queries import run_sql\n"
        "store, counts = Store(sys.argv[1], create=False), []\n"
        "end = time.monotonic() + float(sys.argv[2])\n"
        "while time.monotonic() < end:\n"
        "    counts.append(run_sql(store, 'SELECT count(*) AS n FROM rollouts').frame['n'].item())\n"
        "print(len(counts), max(counts), all(c % 12 == 0 for c in counts))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", reader_script, str(tmp_path), "12"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors, counts, done = [], [], threading.Event()

    def read_in_thread():
        store = Store(tmp_path, create=False)
        while not done.is_set():
            try:
                counts.append(run_sql(store, "SELECT count(*) AS n FROM rollouts").frame["n"].item())
                store.query("SELECT step, reward_mean FROM steps")
            except Exception as error:  # any error at all fails the test
                errors.append(error)

    reader = threading.Thread(target=read_in_thread)
    reader.start()
    events = list(train(Config(steps=25, **SMALL), load_task("arithmetic"), tmp_path))
    done.set()
    reader.join()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    reads, largest, whole = out.split()
    assert errors == []
    assert len(counts) > 10 and all(c % 12 == 0 for c in counts)  # only whole steps are ever seen
    assert int(reads) > 10 and whole == "True"
    assert len([e for e in events if isinstance(e, StepFinished)]) == 25
    assert Store(tmp_path).query("SELECT count(*) AS n FROM rollouts")["n"].item() == 25 * 12


def test_the_writer_commits_steps_together_and_flush_commits_them_at_once(tmp_path, monkeypatch):
    """Steps that arrive within COMMIT_SECONDS share one commit; flush() commits without waiting;
    a step left alone is committed COMMIT_SECONDS after it arrived; a reader meanwhile gets in."""
    store = Store(tmp_path)
    store.create_run("r1", "hand", str(tmp_path), "tiny", {}, "")
    commits = []
    write_steps = Store.write_steps
    monkeypatch.setattr(
        Store, "write_steps", lambda self, steps, con=None: commits.append(len(steps)) or write_steps(self, steps, con)
    )
    writer = StepWriter(store)
    for step in (1, 2, 3):
        writer.write(step_rows("r1", step, [("1+1=", [("2", 1.0), ("3", 0.0)])]))
    started = time.monotonic()
    writer.flush()
    assert time.monotonic() - started < COMMIT_SECONDS and commits == [3]
    writer.write(step_rows("r1", 4, [("2+2=", [("4", 1.0), ("4", 1.0)])]))
    time.sleep(COMMIT_SECONDS + 0.3)
    assert commits == [3, 1]
    assert store.query("SELECT count(*) AS n FROM rollouts")["n"].item() == 8  # the writer let go of the file
    writer.close()


@pytest.mark.slow
def test_sigkill_keeps_whole_steps_marks_the_run_interrupted_and_it_resumes(tmp_path):
    command = [
        sys.executable,
        "-m",
        "workbench",
        "train",
        "--task",
        "arithmetic",
        "--workspace",
        str(tmp_path),
        "--steps",
        "500",
        "--checkpoint-every",
        "4",
        "--group-size",
        "4",
        "--prompts-per-step",
        "3",
        "--max-new-tokens",
        "8",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if (tmp_path / "store.duckdb").exists():
            steps = run_sql(Store(tmp_path, create=False), "SELECT count(*) AS n FROM steps").frame["n"].item()
            if steps >= 10:
                break
    process.send_signal(signal.SIGKILL)
    process.wait()

    store = Store(tmp_path)  # opens cleanly, replaying DuckDB's WAL
    (run,) = store.query("SELECT run_id, status FROM runs").itertuples(index=False)
    assert run.status == "interrupted"
    per_step = store.query(
        "SELECT s.step, (SELECT count(*) FROM rollouts r WHERE r.step = s.step) AS rollouts, "
        "(SELECT count(*) FROM reward_values v WHERE v.step = s.step) AS values FROM steps s ORDER BY s.step"
    )
    assert len(per_step) >= 10
    assert per_step["step"].tolist() == list(range(1, len(per_step) + 1))
    assert (per_step["rollouts"] == 12).all() and (per_step["values"] == 12).all()

    last_stored = len(per_step)
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench",
            "train",
            "--workspace",
            str(tmp_path),
            "--resume",
            run.run_id,
            "--steps",
            str(last_stored + 2),
        ],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    steps = store.query("SELECT step FROM steps ORDER BY step")["step"].tolist()
    assert steps == list(range(1, last_stored + 3))
    assert store.run(run.run_id)["status"] == "finished"


def test_a_version_1_store_is_migrated_and_keeps_its_rows(tmp_path):
    v1 = """
    CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
    INSERT INTO meta VALUES ('schema_version', '1');
    CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, task VARCHAR, model VARCHAR,
        config JSON, status VARCHAR, task_path VARCHAR, reward_source VARCHAR, host VARCHAR, pid INTEGER);
    CREATE TABLE rollouts (run_id VARCHAR, step INTEGER, group_id INTEGER, sample_idx INTEGER, prompt VARCHAR,
        completion VARCHAR, reward DOUBLE, advantage DOUBLE, num_tokens INTEGER, truncated BOOLEAN);
    INSERT INTO runs VALUES ('old', now(), 'arithmetic', 'tiny', '{}', 'finished', '', '', '', 0);
    INSERT INTO rollouts VALUES ('old', 1, 0, 0, '1+1=', '2', 1.0, 0.5, 2, false);
    """
    with duckdb.connect(str(tmp_path / "store.duckdb")) as con:
        con.execute(v1)
    store = Store(tmp_path)
    assert store.query("SELECT value FROM meta")["value"].item() == str(SCHEMA_VERSION)
    row = store.query("SELECT * FROM rollouts").iloc[0]
    assert row["completion"] == "2" and row["reward_version"] is None and row["extra_columns"] is None
    assert store.run("old")["error"] is None and store.query("SELECT * FROM reward_versions").empty


def test_a_version_2_store_gains_the_step_columns_of_version_3(tmp_path):
    v2_steps = """
    CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
    INSERT INTO meta VALUES ('schema_version', '2');
    CREATE TABLE steps (run_id VARCHAR, step INTEGER, reward_mean DOUBLE, PRIMARY KEY (run_id, step));
    INSERT INTO steps VALUES ('old', 1, 0.5);
    """
    with duckdb.connect(str(tmp_path / "store.duckdb")) as con:
        con.execute(v2_steps)
    store = Store(tmp_path)
    assert store.query("SELECT value FROM meta")["value"].item() == str(SCHEMA_VERSION)
    row = store.query("SELECT * FROM steps").iloc[0]
    assert row["reward_mean"] == 0.5 and pd.isna(row["sampling_logp_diff_max"]) and pd.isna(row["learning_rate"])


def test_a_version_3_store_names_its_reward_scaling_and_gains_entropy(tmp_path):
    """scale_rewards was a boolean before 'batch' existed: true is 'group', false 'none'."""
    v3 = """
    CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
    INSERT INTO meta VALUES ('schema_version', '3');
    CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, task VARCHAR, model VARCHAR,
        config JSON, status VARCHAR, task_path VARCHAR, reward_source VARCHAR, host VARCHAR, pid INTEGER,
        error VARCHAR);
    INSERT INTO runs VALUES ('scaled', now(), 'arithmetic', 'tiny', '{"scale_rewards": true, "beta": 0.04}',
        'finished', '', '', '', 0, NULL);
    INSERT INTO runs VALUES ('unscaled', now(), 'arithmetic', 'tiny', '{"scale_rewards": false}',
        'finished', '', '', '', 0, NULL);
    CREATE TABLE steps (run_id VARCHAR, step INTEGER, reward_mean DOUBLE, PRIMARY KEY (run_id, step));
    """
    with duckdb.connect(str(tmp_path / "store.duckdb")) as con:
        con.execute(v3)
    store = Store(tmp_path)
    assert store.run("scaled")["config"] == {"scale_rewards": "group", "beta": 0.04}
    assert store.run("unscaled")["config"] == {"scale_rewards": "none"}
    assert "entropy" in store.query("SELECT * FROM steps").columns


def test_a_run_is_named_and_tagged_and_its_id_stays(store):
    assert store.rename_run("r1", "  beta 0.04, the baseline ") == "beta 0.04, the baseline"
    assert store.tag_run("r1", [" baseline", "beta", "", "baseline"]) == ["baseline", "beta"]
    run = store.run("r1")
    assert (run["run_id"], run["name"], run["tags"]) == ("r1", "beta 0.04, the baseline", ["baseline", "beta"])
    assert store.runs()[["run_id", "name"]].values.tolist() == [["r1", "beta 0.04, the baseline"]]
    assert store.runs().tags.tolist() == [["baseline", "beta"]]
    assert run_sql(store, "SELECT run_id FROM runs WHERE list_contains(tags, 'beta')").frame.run_id.tolist() == ["r1"]
    assert store.rename_run("r1", " ") is None and store.run("r1")["name"] is None  # blank: the id alone
    assert store.tag_run("r1", []) == [] and store.runs().tags.tolist() == [[]]
    for bad, words in [("x" * 81, "at most 80 characters"), ("two\nlines", "one line")]:
        with pytest.raises(StoreError, match=words):
            store.rename_run("r1", bad)
    with pytest.raises(StoreError, match="without commas"):
        store.tag_run("r1", ["a,b"])
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.rename_run("nope", "x")


def test_delete_removes_every_row_of_the_run_and_its_folder_and_is_refused_while_it_trains(store, tmp_path):
    store.create_run("r2", "hand", str(tmp_path), "tiny", {}, "")
    write_groups(store, "r2", 1, [("5+5=", [("10", 1.0), ("9", 0.0)])])
    rows = {"tokens": [dict(run_id="r1", step=1, group_id=0, sample_idx=0, tokens=["2"], logprob=[-0.1])]}
    rows |= {"evals": [dict(run_id="r1", step=1, reward_mean=0.5)], "health": [dict(run_id="r1", step=1, name="x")]}
    rows |= {"reward_logs": [dict(run_id="r1", step=1, name="correct", output="hi")]}
    rows |= {"reward_versions": [dict(version="v-r1", filename="reward.py", source="...")]}
    store.write_steps([rows])
    with store.connect(read_only=False) as con:  # r1 scored by its own version and by one r2 shares
        con.execute("UPDATE rollouts SET reward_version = IF(run_id = 'r1' AND step = 1, 'v-r1', 'v-both')")
        con.execute("INSERT INTO reward_versions VALUES ('v-both', 'reward.py', '...', now())")
    folder = tmp_path / "runs" / "r1"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "adapter_config.json").write_text("{}")

    # r1 is 'running' and its process (this one) is alive: refused, nothing deleted
    with pytest.raises(StoreError, match=r"run r1 is training now \(process \d+ on .+\): stop it first"):
        store.delete_run("r1")
    assert folder.exists() and store.run("r1") is not None

    store.set_status("r1", "stopped")
    deleted = store.delete_run("r1")
    assert deleted == dict(
        runs=1, steps=2, rollouts=8, reward_values=8, reward_logs=1, evals=1, health=1, tokens=1, reward_versions=1
    )
    for table in ("runs", "steps", "rollouts", "reward_values", "reward_logs", "evals", "health", "tokens"):
        assert store.query(f"SELECT count(*) AS n FROM {table} WHERE run_id = 'r1'").n[0] == 0, table
    assert not folder.exists()
    assert store.query("SELECT version FROM reward_versions").version.tolist() == ["v-both"]  # r2 still uses it
    assert store.runs().run_id.tolist() == ["r2"] and len(store.group("r2", 1, 0).rewards) == 2  # r2 untouched
    with pytest.raises(StoreError, match="no run 'r1'"):
        store.delete_run("r1")
    with pytest.raises(StoreError, match="does not name a folder"):
        store.delete_run("../r2")


def test_a_version_7_store_gains_run_names_and_tags(tmp_path):
    store = Store(tmp_path)
    store.create_run("old", "hand", str(tmp_path), "tiny", {}, "")
    with store.connect(read_only=False) as con:  # back to version 7: runs without name and tags
        con.execute("ALTER TABLE runs DROP COLUMN name; ALTER TABLE runs DROP COLUMN tags")
        con.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    store = Store(tmp_path)
    assert store.query("SELECT value FROM meta")["value"].item() == str(SCHEMA_VERSION)
    assert (store.run("old")["name"], store.run("old")["tags"]) == (None, [])
    store.tag_run("old", ["kept"])
    assert store.runs().tags.tolist() == [["kept"]]
