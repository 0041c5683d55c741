"""Classroom accounts: the users file, hashed passwords, and logins throttled by name and address."""

import pytest

from workbench.accounts import (
    ADDRESS_FREE_FAILURES,
    FREE_FAILURES,
    AccountsError,
    Logins,
    Throttle,
    User,
    hash_password,
    read_users,
)


def test_a_users_file_names_students_and_teachers(tmp_path):
    hashed = hash_password("s3cret")
    path = tmp_path / "class.txt"
    path.write_text(f"# week 1\nada:pass:word\n\nbob:{hashed}\nmia:chalk:teacher\n")
    users = read_users(path)
    assert list(users) == ["ada", "bob", "mia"]
    assert users["ada"].check("pass:word") and not users["ada"].check("pass")  # a colon in a password is kept
    assert users["bob"].check("s3cret") and not users["bob"].check(hashed)  # the hash is not the password
    assert users["mia"].teacher and not users["ada"].teacher


@pytest.mark.parametrize(
    "text, words",
    [
        ("ada:x\n../etc:y\n", "line 2: '../etc' is not a name"),
        ("ada\n", "line 1: ada has no password"),
        ("ada:x\nada:y\n", "line 2: ada is named twice"),
        ("# nobody\n", "names nobody"),
        (b"ada:caf\xe9\n", "cannot read the users file"),
    ],
)
def test_a_bad_users_file_names_its_line(tmp_path, text, words):
    path = tmp_path / "class.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(AccountsError, match=words.replace("(", r"\(").replace(".", r"\.")):
        read_users(path)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_wrong_passwords_past_the_free_ones_wait_twice_as_long_each_time():
    clock = Clock()
    throttle = Throttle(clock)
    for _ in range(FREE_FAILURES):
        assert throttle.wait("name:ada") == 0
        throttle.failed("name:ada")
    assert throttle.wait("name:ada") == pytest.approx(1.0)
    throttle.failed("name:ada")
    assert throttle.wait("name:ada") == pytest.approx(2.0)
    clock.now += 2.0
    assert throttle.wait("name:ada") == 0 and throttle.wait("name:bob") == 0
    throttle.passed("name:ada")
    assert throttle.wait("name:ada") == 0


def test_a_throttled_login_is_refused_even_with_the_right_password():
    clock = Clock()
    logins = Logins({"ada": User("ada", "right"), "bob": User("bob", "pw")}, clock)
    assert not logins.check("ada", "right", "10.0.0.1", only="bob")  # a page is its own user's
    for _ in range(200):  # 200 wrong logins, as fast as they come
        assert not logins.check("ada", "wrong", "10.0.0.1")
    assert not logins.check("ada", "right", "10.0.0.9")  # the name is throttled, from any address
    assert not logins.check("bob", "pw", "10.0.0.1")  # and the address, for any name
    assert logins.check("bob", "pw", "10.0.0.2")
    for _ in range(ADDRESS_FREE_FAILURES - 1):  # a class behind one router: others' mistakes do not lock it out
        assert not logins.check("cy", "typo", "10.0.0.3")
    assert logins.check("bob", "pw", "10.0.0.3")
    clock.now += 61  # the longest wait
    assert logins.check("ada", "right", "10.0.0.9")
