"""`python -m workbench app` (and `python app.py`): the workbench served in a browser."""

from __future__ import annotations

import argparse
import os
import sys

UNSANDBOXED = "--rewards-may-read-every-students-files"  # classroom mode without a sandbox: the flag says the risk


def add_app_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default="runs", help="folder of the store and checkpoints")
    parser.add_argument(
        "--password",
        default=os.environ.get("WORKBENCH_PASSWORD"),
        help="required off 127.0.0.1 and for --share (or set WORKBENCH_PASSWORD)",
    )
    parser.add_argument("--share", action="store_true", help="a public Gradio share link too (needs a password)")
    parser.add_argument(
        "--users",
        metavar="FILE",
        help="classroom mode: one name:password (or name:password:teacher) per line; each user gets their own "
        "workspace, runs and login, the teacher a Class tab",
    )
    parser.add_argument(
        "--max-concurrent-runs",
        type=int,
        metavar="N",
        help="runs training at once; the others wait in a fair queue (default: one per GPU, else per core)",
    )
    parser.add_argument(
        UNSANDBOXED,
        action="store_true",
        dest="unsandboxed",
        help="classroom mode without a reward sandbox (bubblewrap): every student's reward code could then read "
        "the other students' files and the server's environment",
    )


def run_app(args: argparse.Namespace) -> int:
    """Serve the app; off 127.0.0.1, or with a share link, only with a password, because the reward editor runs
    code. With --users, the classroom."""
    if args.users:
        return run_classroom(args)
    if args.host not in ("127.0.0.1", "localhost") and not args.password:
        return _refuse(
            f"--host {args.host} serves a reward editor that runs code; give --password "
            "(or WORKBENCH_PASSWORD) to bind anywhere but 127.0.0.1"
        )
    if args.share and not args.password:
        return _refuse("--share opens a public link to a reward editor that runs code: give --password too")
    from workbench.accounts import Logins, User
    from workbench.rewards.tasks import upload_limit_mb
    from workbench.ui import KEEP_ZOOM_JS, build_app  # gradio loads only for the app

    logins = Logins({"workbench": User("workbench", args.password)}) if args.password else None
    app = build_app(args.workspace)
    app.launch(
        server_name=args.host,
        server_port=args.port,
        auth=logins and (lambda name, password: logins.check(name, password)),
        share=bool(args.share and args.password),  # never by default: GRADIO_SHARE, Colab and Kaggle would
        max_file_size=f"{upload_limit_mb()}mb",  # larger uploads are refused before they are saved anywhere
        js=KEEP_ZOOM_JS,
        show_error=True,
        state_session_capacity=app.state_session_capacity,
    )
    return 0


def run_classroom(args: argparse.Namespace) -> int:
    from workbench.accounts import AccountsError, Logins, read_users
    from workbench.rewards.sandbox import bubblewrap, sandbox_status

    if args.share:
        return _refuse("--share serves one user's app; a classroom is served on its own address (--host, --port)")
    if bubblewrap()[0] is None and not args.unsandboxed:
        return _refuse(
            f"classroom mode runs every student's reward code, and this machine has no reward sandbox "
            f"({sandbox_status()}): install bubblewrap (apt-get install bubblewrap), or start with {UNSANDBOXED} "
            "to accept that reward code can read every student's files"
        )
    try:
        users = read_users(args.users)
    except AccountsError as error:
        return _refuse(str(error))
    from workbench.engine.classroom import Classroom
    from workbench.engine.scheduler import default_slots
    from workbench.ui.classroom import serve

    slots = args.max_concurrent_runs or default_slots()
    if slots < 1:
        return _refuse(f"--max-concurrent-runs must be at least 1, got {slots}")
    serve(Classroom.open(args.workspace, users, slots), Logins(users), args.host, args.port)
    return 0


def run_hash_password(args: argparse.Namespace) -> int:
    """Print a password as a users file may hold it (read from stdin, so that it stays out of the shell's history)."""
    from workbench.accounts import hash_password

    password = sys.stdin.readline().rstrip("\n")
    if not password:
        return _refuse("give the password on standard input, e.g. echo 'secret' | python -m workbench hash-password")
    print(hash_password(password))
    return 0


def _refuse(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
