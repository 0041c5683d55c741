import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never download: a hub id must fail at once rather than after network retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def tiny_model_built():
    """Build (or find cached) the tiny model once, before tests that time a run or start the app."""
    from workbench.tiny import tiny_model_path

    return tiny_model_path()
