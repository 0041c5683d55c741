"""`python -m workbench app` (and `python app.py`): the workbench served in a browser."""

from __future__ import annotations

import argparse
import os
import sys


def add_app_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default="runs", help="folder of the store and checkpoints")
    parser.add_argument(
        "--password",
        default=os.environ.get("WORKBENCH_PASSWORD"),
        help="required off 127.0.0.1 (or set WORKBENCH_PASSWORD)",
    )


def run_app(args: argparse.Namespace) -> int:
    """Serve the app; off 127.0.0.1 only with a password, because the reward editor runs code."""
    if args.host not in ("127.0.0.1", "localhost") and not args.password:
        print(
            f"error: --host {args.host} serves a reward editor that runs code; give --password "
            "(or WORKBENCH_PASSWORD) to bind anywhere but 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    from workbench.ui import KEEP_ZOOM_JS, build_app  # gradio loads only for the app

    auth = ("workbench", args.password) if args.password else None
    build_app(args.workspace).launch(
        server_name=args.host, server_port=args.port, auth=auth, js=KEEP_ZOOM_JS, show_error=True
    )
    return 0
