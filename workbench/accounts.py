"""The classroom's accounts: a users file, passwords (plain or hashed), and logins throttled by name and address.

A users file has one account per line, `name:password`, or `name:password:teacher` for a teacher; a password
may be given hashed, as `python -m workbench hash-password` prints it (`scrypt$...`), so that the file does not
hold it in clear. Blank lines and lines starting with # are skipped.

Logins are throttled: after FREE_FAILURES wrong passwords for a name (ADDRESS_FREE_FAILURES from an address: a
class behind one school router shares it), each further attempt must wait twice as long as the one before
(1 s, 2 s, 4 s, ... up to MAX_WAIT), and an attempt during the wait is refused without being checked. A right
password clears the name's and the address's count.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a name is a folder name too: <workspace>/users/<name>
FREE_FAILURES = 5
ADDRESS_FREE_FAILURES = 30
MAX_WAIT = 60.0
SCRYPT = dict(n=2**14, r=8, p=1)


class AccountsError(ValueError):
    """The users file is unusable; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class User:
    name: str
    password: str  # as the file gives it: clear, or `scrypt$salt$hash`
    teacher: bool = False

    def check(self, password: str) -> bool:
        if not self.password.startswith("scrypt$"):
            return hmac.compare_digest(self.password.encode(), password.encode())
        _, salt, digest = self.password.split("$")
        given = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **SCRYPT).hex()
        return hmac.compare_digest(given, digest)


def hash_password(password: str) -> str:
    """What a users file may hold instead of the password itself."""
    salt = secrets.token_bytes(16)
    return f"scrypt${salt.hex()}${hashlib.scrypt(password.encode(), salt=salt, **SCRYPT).hex()}"


def read_users(path: str | Path) -> dict[str, User]:
    """The accounts of a users file, by name; at least one, and no name twice."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise AccountsError(f"cannot read the users file {path}: {error}") from None
    users: dict[str, User] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.strip().partition(":")
        password, _, role = rest.rpartition(":") if rest.endswith(":teacher") else (rest, "", "")
        where = f"{path}, line {number}"
        if not NAME.fullmatch(name):
            raise AccountsError(f"{where}: {name!r} is not a name (letters, digits, _ . -; at most 64)")
        if not password:
            raise AccountsError(f"{where}: {name} has no password (name:password, or name:password:teacher)")
        if name in users:
            raise AccountsError(f"{where}: {name} is named twice")
        users[name] = User(name, password, teacher=role == "teacher")
    if not users:
        raise AccountsError(f"the users file {path} names nobody (one name:password per line)")
    return users


class Throttle:
    """Failed logins counted by key (a name, an address): past FREE_FAILURES, a doubling wait between tries."""

    def __init__(self, clock=time.monotonic, free: int = FREE_FAILURES):
        self.clock, self.free = clock, free
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures, time of the last)
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again (0: now)."""
        with self._lock:
            failures, last = self._failures.get(key, (0, 0.0))
        if failures < self.free:
            return 0.0
        return max(0.0, last + min(MAX_WAIT, 2.0 ** (failures - self.free)) - self.clock())

    def failed(self, key: str) -> None:
        with self._lock:
            failures, _ = self._failures.get(key, (0, 0.0))
            self._failures[key] = (failures + 1, self.clock())

    def passed(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class Logins:
    """Checks a login against the users, throttled by name and by address."""

    def __init__(self, users: dict[str, User], clock=time.monotonic):
        self.users = users
        self.names, self.addresses = Throttle(clock), Throttle(clock, ADDRESS_FREE_FAILURES)

    def check(self, name: str, password: str, address: str = "", only: str | None = None) -> bool:
        """Whether `name` logs in with `password` (as `only`, when a page is one user's); a throttled attempt is
        refused unchecked, and counts again."""
        throttled = self.names.wait(name) > 0 or self.addresses.wait(address) > 0
        user = self.users.get(name)
        right = not throttled and user is not None and (only is None or name == only) and user.check(password)
        for throttle, key in ((self.names, name), (self.addresses, address)):
            if right:
                throttle.passed(key)
            else:
                throttle.failed(key)
        return right
