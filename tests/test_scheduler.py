"""The fair queue: at most `slots` runs at once, the next in turn by owner, then by arrival; and runners on it."""

import time

import pytest

from workbench import Config, load_task
from workbench.accounts import User
from workbench.engine.classroom import Classroom
from workbench.engine.runner import Runner
from workbench.engine.scheduler import Scheduler
from workbench.rewards.tasks import TaskError


def test_runs_beyond_the_slots_wait_and_start_in_fair_turn():
    started = []
    scheduler = Scheduler(2)
    for owner, run_id in [("ada", "a1"), ("ada", "a2"), ("bob", "b1"), ("ada", "a3"), ("cy", "c1")]:
        scheduler.submit(owner, run_id, lambda run_id=run_id: started.append(run_id))
    assert started == ["a1", "a2"] and scheduler.running() == [("ada", "a1"), ("ada", "a2")]
    assert [run for _, run in scheduler.waiting()] == ["b1", "c1", "a3"]  # owners with none training first
    assert scheduler.place("b1") == 1 and scheduler.place("a1") is None
    scheduler.done("a1")  # ada still trains a2: bob goes before her waiting a3, then cy before a3
    assert started[-1] == "b1"
    assert [run for _, run in scheduler.waiting()] == ["c1", "a3"] and scheduler.place("a3") == 2
    scheduler.done("c1")  # withdrawn while waiting: never launched
    scheduler.done("a2")
    assert started == ["a1", "a2", "b1", "a3"] and scheduler.waiting() == []


def test_a_scheduler_needs_a_slot():
    with pytest.raises(ValueError, match="at least one slot"):
        Scheduler(0)


def wait(runner, statuses, timeout=120):
    deadline = time.monotonic() + timeout
    while runner.snapshot.status not in statuses:
        assert time.monotonic() < deadline, runner.snapshot
        time.sleep(0.05)
    return runner.snapshot


def test_two_students_one_slot_the_second_waits_then_trains(tmp_path):
    scheduler = Scheduler(1)
    ada = Runner(str(tmp_path / "ada"), scheduler, owner="ada")
    bob = Runner(str(tmp_path / "bob"), scheduler, owner="bob")
    cy = Runner(str(tmp_path / "cy"), scheduler, owner="cy")
    config = Config(steps=2, group_size=2, prompts_per_step=2, max_new_tokens=4)
    task = load_task("arithmetic")
    first = ada.start(config, task)
    second = bob.start(config, task)
    third = cy.start(config, task)
    assert bob.snapshot.status == "queued" and bob.status(second)["queue_place"] == 1
    assert cy.status(third)["queue_place"] == 2
    cy.stop()  # withdrawn from the queue: never trains
    assert cy.snapshot.status == "withdrawn" and scheduler.place(third) is None
    assert wait(ada, ("finished",)).run_id == first
    assert wait(bob, ("finished",)).step == 2
    assert cy.snapshot.status == "withdrawn" and not (tmp_path / "cy" / "runs" / third).exists()
    assert [run.run_id for run in ada.store.runs().itertuples()] == [first]  # each student's store is their own


def test_a_student_holds_one_run_until_the_teacher_allows_more(tmp_path):
    users = {"ada": User("ada", "pw"), "mia": User("mia", "pw", teacher=True)}
    classroom = Classroom.open(tmp_path, users, slots=1)
    ada = classroom.runners["ada"]
    config, task = Config(steps=50, group_size=2, prompts_per_step=2, max_new_tokens=4), load_task("arithmetic")
    first = ada.start(config, task)
    with pytest.raises(RuntimeError, match="one run trains at a time"):
        ada.start(config, task)  # a second run of hers, training or waiting, is refused
    classroom.allow("ada", 2)
    second = ada.start(config, task)
    assert ada.status(second)["status"] == "queued" and ada.status(second)["queue_place"] == 1
    with pytest.raises(TaskError, match="name a student"):
        classroom.allow("zed", 2)
    ada.stop(second)  # withdrawn from the queue
    ada.stop(first)
    deadline = time.monotonic() + 120
    while ada.status(first)["status"] != "stopped":
        assert time.monotonic() < deadline, ada.status(first)
        time.sleep(0.05)
    assert ada.status(second)["status"] == "withdrawn"
