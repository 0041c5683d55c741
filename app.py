"""python app.py [--host H] [--port P] [--workspace DIR] [--password PW]: the workbench in a browser."""

import argparse
import os
import sys

from workbench.ui import KEEP_ZOOM_JS, build_app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default="runs", help="folder of the store and checkpoints")
    parser.add_argument(
        "--password",
        default=os.environ.get("WORKBENCH_PASSWORD"),
        help="required off 127.0.0.1 (or set WORKBENCH_PASSWORD)",
    )
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost") and not args.password:
        print(
            f"error: --host {args.host} serves a reward editor that runs code; give --password "
            "(or WORKBENCH_PASSWORD) to bind anywhere but 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    auth = ("workbench", args.password) if args.password else None
    build_app(args.workspace).launch(
        server_name=args.host, server_port=args.port, auth=auth, js=KEEP_ZOOM_JS, show_error=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
