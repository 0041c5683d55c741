"""python app.py [--host H] [--port P] [--workspace DIR] [--password PW]: the workbench in a browser.

The same as `python -m workbench app`, which an installed package runs from any folder.
"""

import argparse
import sys

from workbench.cli.app import add_app_flags, run_app

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_app_flags(parser)
    sys.exit(run_app(parser.parse_args()))
