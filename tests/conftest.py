"""Shared fixtures. Everything is offline: tiny random models written to temporary folders."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from homodistil_hf.testing import save_tiny_model, write_corpus  # noqa: E402

# Tiny models gain nothing from intra-op threads, and under pytest-xdist (one worker per core) or on a busy machine
# extra threads oversubscribe the cores: measured 33 s instead of 1.6 s for a 16-step run with 2 threads under load.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_mlm_teacher(tmp_path_factory):
    """A tiny random BERT MLM teacher (hidden 64, 4 heads, FFN 128, 2 layers, dropout 0) with its tokenizer."""
    return save_tiny_model(tmp_path_factory.mktemp("teacher") / "bert-mlm", "bert", "mlm")


@pytest.fixture(scope="session")
def tiny_base_teacher(tmp_path_factory):
    """The same shape as a bare BertModel (no MLM head), like a sentence-transformers checkpoint."""
    return save_tiny_model(tmp_path_factory.mktemp("teacher") / "bert-base", "bert", "base")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """300 lines of English-like text."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", 300)
