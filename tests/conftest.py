import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never download: a hub id must fail at once rather than after network retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
