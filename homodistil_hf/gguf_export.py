"""GGUF export: write an exported student (a stock Hugging Face causal-LM folder) as a llama.cpp GGUF file.

`export_gguf(model_dir, path, outtype)` reads what `export_model` writes (config.json, *.safetensors, tokenizer
files) and writes one GGUF file with the `gguf` package (`GGUFWriter`), following the conventions of llama.cpp's
`convert_hf_to_gguf.py`, so that llama.cpp and transformers' GGUF loader (`from_pretrained(folder, gguf_file=name)`)
both read it:

- Families: llama, mistral (written as llama.cpp's `llama` architecture, as its converter does), qwen2, qwen3, gpt2.
- Tensor names from `gguf.get_tensor_name_map`; Llama/Mistral q and k rows permuted to llama.cpp's rotary layout
  (transformers undoes it on load); GPT-2's Conv1D weights transposed to (out, in); no `output.weight` when the LM
  head is tied to the embeddings.
- Tensor types as llama.cpp chooses them: 1-D tensors (norms, biases) and GPT-2's position embeddings stay F32; the
  rest take `outtype`; under q8_0 a tensor whose rows are not a multiple of 32 falls back to F16.
- Tokenizer: byte-level BPE (`tokenizer.json` as GPT-2, SmolLM2, Qwen write it): tokens, token types, merges,
  special token ids and the chat template (`gguf.SpecialVocab`). Other tokenizer models are refused.

The file is written to a temporary file in the same folder and renamed into place, so an interrupted export never
leaves a half-written file at `path` (an existing file there stays as it was).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch

from .errors import UserError

# model_type -> llama.cpp architecture name (gguf.MODEL_ARCH_NAMES value).
ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gpt2": "gpt2"}
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# tokenizer.json pre-tokenizer (its Split regex, or a marker for the regex-free forms) -> llama.cpp `tokenizer.ggml.pre`.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_TOKENIZERS = {"bytelevel": "gpt-2", "digits+bytelevel": "smollm", _QWEN2_SPLIT: "qwen2", _LLAMA3_SPLIT: "llama-bpe"}
_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")  # GPT-2


def export_gguf(model_dir: str | os.PathLike, path: str | os.PathLike, outtype: str = "f16") -> Path:
    """Write the causal LM in `model_dir` (a stock Hugging Face folder) as a llama.cpp GGUF file at `path`.

    `outtype`: 'f32', 'f16', 'bf16' or 'q8_0' (llama.cpp's 8-bit blocks of 32 weights with one f16 scale), the type
    of the 2-D weights; norms and biases stay F32. Returns `path`.

    Raises `UserError` (one line) for an unsupported `outtype`, model family (supported: llama, mistral, qwen2,
    qwen3, gpt2), tokenizer (supported: byte-level BPE `tokenizer.json` with a GPT-2, SmolLM, Qwen2 or Llama-3
    pre-tokenizer), rope scaling, a missing folder/weights, or a vocabulary larger than the model's.

    Source: llama.cpp's `convert_hf_to_gguf.py` (ggml-org/llama.cpp), whose metadata keys, tensor names, q/k
    permutation and tensor types this follows; read back by transformers' GGUF loader and by llama.cpp.
    """
    import gguf

    if outtype not in OUTTYPES:
        raise UserError(f"outtype {outtype!r} is not supported: use one of {', '.join(OUTTYPES)}")
    model_dir, path = Path(model_dir), Path(path)
    config = _read_config(model_dir)
    arch = ARCHS[config["model_type"]]
    qtype = getattr(gguf.GGMLQuantizationType, outtype.upper())
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    tokens, toktypes, pre = _vocab(model_dir, _vocab_size(config))
    state = _read_weights(model_dir)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        writer.add_name(model_dir.resolve().name)
        writer.add_file_type(int(file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_hparams(writer, config)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(toktypes)
        gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
        for name, data, dtype in _tensors(config, state, arch, qtype):
            writer.add_tensor(name, data, raw_dtype=dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return path


def _read_config(model_dir: Path) -> dict:
    """config.json of `model_dir`, checked for a supported family and plain rope."""
    file = model_dir / "config.json"
    if not file.is_file():
        raise UserError(f"{model_dir} has no config.json: pass a folder written by export_model or save_pretrained")
    config = json.loads(file.read_text())
    model_type = config.get("model_type")
    if model_type not in ARCHS:
        raise UserError(f"model_type {model_type!r} of {model_dir} cannot be written as GGUF: supported types are "
                        f"{', '.join(ARCHS)}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UserError(f"{model_dir}: rope type {rope.get('rope_type', rope.get('type'))!r} is not supported by "
                        "the GGUF export (only plain rope): export a model without rope scaling")
    return config


def _vocab_size(config: dict) -> int:
    return int(config["vocab_size"])


def _read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of the folder's safetensors files (one file or shards), by Hugging Face name."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir} has no .safetensors weights: export the model with export_model first")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def _vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int], str]:
    """(tokens, token types, pre-tokenizer name) of a byte-level BPE tokenizer, padded to the model's vocab size
    with `[PAD{i}]` (type UNUSED) as llama.cpp does."""
    import gguf
    from transformers import AutoTokenizer

    if not (model_dir / "tokenizer.json").is_file():
        raise UserError(f"{model_dir} has no tokenizer.json: export the model with its (fast) tokenizer")
    tok = AutoTokenizer.from_pretrained(model_dir)
    spec = json.loads(tok.backend_tokenizer.to_str())
    pre = _pre_tokenizer_name(spec.get("pre_tokenizer"))
    if spec["model"]["type"] != "BPE" or pre is None:
        raise UserError(f"the tokenizer of {model_dir} ({spec['model']['type']}, pre-tokenizer "
                        f"{(spec.get('pre_tokenizer') or {}).get('type')}) is not supported: the GGUF export writes "
                        "byte-level BPE tokenizers (GPT-2, SmolLM, Qwen2, Llama-3 pre-tokenizers)")
    vocab = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise UserError(f"the tokenizer of {model_dir} has ids up to {max(vocab.values())} but the model's "
                        f"vocab_size is {vocab_size}: resize the embeddings to cover the tokenizer")
    by_id = {i: t for t, i in vocab.items()}
    added = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types], pre


def _pre_tokenizer_name(pre: dict | None) -> str | None:
    """llama.cpp's name (`tokenizer.ggml.pre`) for a byte-level tokenizer.json pre-tokenizer, None if unknown."""
    if not pre:
        return None
    steps = pre.get("pretokenizers", [pre]) if pre["type"] == "Sequence" else [pre]
    kinds = [s["type"] for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return _PRE_TOKENIZERS["bytelevel"]
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return _PRE_TOKENIZERS["digits+bytelevel"]
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        return _PRE_TOKENIZERS.get(steps[0].get("pattern", {}).get("Regex"))
    return None


def _add_hparams(writer, c: dict) -> None:
    """The architecture's hyper-parameters under llama.cpp's keys (`{arch}.context_length`, ...)."""
    writer.add_vocab_size(_vocab_size(c))
    if c["model_type"] == "gpt2":
        writer.add_context_length(c.get("n_positions", c.get("n_ctx", 1024)))
        writer.add_embedding_length(c["n_embd"])
        writer.add_block_count(c["n_layer"])
        writer.add_feed_forward_length(c.get("n_inner") or 4 * c["n_embd"])
        writer.add_head_count(c["n_head"])
        writer.add_layer_norm_eps(c.get("layer_norm_epsilon", 1e-5))
        return
    heads = c["num_attention_heads"]
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(c.get("num_key_value_heads") or heads)
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    rope = c.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", c.get("rope_theta", 10000.0))))
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    if c.get("head_dim"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if ARCHS[c["model_type"]] == "llama":
        writer.add_rope_dimension_count(head_dim)


def _tensors(c: dict, state: dict[str, torch.Tensor], arch: str, qtype):
    """Yield (gguf name, numpy data, ggml type) for every weight, in llama.cpp's layout and types."""
    import gguf

    layers = c.get("num_hidden_layers", c.get("n_layer"))
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), layers)
    tied = c.get("tie_word_embeddings", True)
    heads = c.get("num_attention_heads")
    kv_heads = c.get("num_key_value_heads") or heads
    for hf_name, tensor in state.items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reads a missing output.weight as tied to token_embd
        if hf_name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # GPT-2's causal-mask buffers of old checkpoints
        base, _, suffix = hf_name.rpartition(".")
        name = names.get_name(base)
        if name is None:
            raise UserError(f"tensor {hf_name} has no GGUF name for architecture {arch}: the folder is not a stock "
                            f"{c['model_type']} checkpoint")
        data = tensor.detach().float()
        if arch == "llama" and base.endswith("self_attn.q_proj"):
            data = _permute(data, heads)
        elif arch == "llama" and base.endswith("self_attn.k_proj"):
            data = _permute(data, kv_heads)
        elif arch == "gpt2" and hf_name.endswith(_CONV1D):
            data = data.T.contiguous()
        data = data.numpy()
        dtype = qtype
        if data.ndim <= 1 or suffix != "weight" or name.endswith("_norm") or name == "position_embd":
            dtype = gguf.GGMLQuantizationType.F32
        try:
            out = gguf.quants.quantize(data, dtype)
        except gguf.QuantError:  # rows not a multiple of the block size
            dtype = gguf.GGMLQuantizationType.F16
            out = gguf.quants.quantize(data, dtype)
        yield f"{name}.{suffix}", out, dtype
    if not tied and "lm_head.weight" not in state:
        raise UserError("config says tie_word_embeddings=false but the weights have no lm_head.weight")


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q or k projection in llama.cpp's rotary layout (each head's two halves interleaved);
    transformers' `LlamaTensorProcessor` applies the inverse on load."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
