import os


def offline() -> None:
    """No Hub access in benchmark runs (and no tokenizer thread pools competing with torch for the 2 cores)."""
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                       ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)
