"""export_gguf: tiny random models of each family -> GGUF -> transformers' GGUF loader gives back the same model.

The tokenizer is a tiny byte-level BPE trained here (as SmolLM2 / Qwen / GPT-2 use), with a ChatML chat template.
transformers' GGUF loader (5.x) limits what round-trips by itself: GPT-2 only with n_positions 1024 and FFN
4 x hidden, Qwen3 only with head_dim 128 (it reads neither from the file; given a config that has them it loads the
same model), and a Mistral loads as a Llama (llama.cpp's converter writes it as one; the same model without a
sliding window).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

gguf = pytest.importorskip("gguf")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from homodistil_hf.errors import UserError  # noqa: E402
from homodistil_hf.gguf_export import export_gguf  # noqa: E402
from homodistil_hf.testing import save_tiny_decoder, save_tiny_model, tiny_decoder, write_corpus  # noqa: E402

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gpt2"]
# What transformers' GGUF loader can rebuild: it takes GPT-2's wpe size from n_ctx (default 1024) and its FFN as
# 4 x hidden, and Qwen3's head_dim from the class default (128).
LOADABLE = {"gpt2": dict(n_inner=None, n_positions=1024), "qwen3": dict(head_dim=128)}
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXT = "The man said that he would come back in 12 days, at 3.5 km/h! <|im_start|>user\nhi there<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few lines: pad 0, bos 1, <|im_start|> 2, eos 3 (<|im_end|>)."""
    lines = write_corpus(tmp_path_factory.mktemp("corpus") / "c.txt", 60).read_text().splitlines()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=360, special_tokens=["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<|endoftext|>",
                                   eos_token="<|im_end|>", chat_template=TEMPLATE)


def save(folder: Path, family: str, tokenizer, tie: bool = True, **overrides):
    """A tiny random `family` model with the tokenizer's vocabulary, saved with it to `folder`."""
    kwargs = dict(vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=3)
    model = tiny_decoder(family, tie=tie, **{**kwargs, **LOADABLE.get(family, {}), **overrides})
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def widths(c) -> dict:
    """The config's widths as the model builds them (families name and default them differently)."""
    hidden, heads = c.hidden_size, c.num_attention_heads
    return dict(hidden=hidden, heads=heads, kv_heads=getattr(c, "num_key_value_heads", None) or heads,
                head_dim=getattr(c, "head_dim", None) or hidden // heads, layers=c.num_hidden_layers,
                intermediate=getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * hidden,
                vocab=c.vocab_size, tied=c.tie_word_embeddings)


def load(path: Path):
    """The model (float32) and tokenizer transformers builds from the GGUF file alone (it sits in its own folder)."""
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def rounded(model, family: str, fn) -> torch.nn.Module:
    """A copy whose tensors of rank >= 2 went through `fn`, as export_gguf stores them (1-D tensors and GPT-2's
    position embeddings stay F32, as in llama.cpp)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and not name.endswith("wpe.weight"):
                p.copy_(fn(p))
    return model


# Stored weight = the nearest value of the type (round to nearest even, as torch casts): relative error <= 2**-11
# for f16, 2**-8 for bf16; a loose bound on the resulting logit change, relative to the largest logit.
ROUNDING = {"f16": (torch.float16, 1e-2), "bf16": (torch.bfloat16, 5e-2)}


@pytest.mark.parametrize(("family", "outtype"),
                         [(f, t) for f in FAMILIES for t in ("f32", "f16")] + [("llama", "bf16")])
def test_round_trip(tmp_path, tokenizer, family, outtype):
    model = save(tmp_path / "hf", family, tokenizer)
    path = export_gguf(tmp_path / "hf", tmp_path / "gguf" / f"m-{outtype}.gguf", outtype)
    back, gtok = load(path)

    assert widths(back.config) == widths(model.config)
    ids = tokenizer(TEXT, add_special_tokens=False).input_ids
    assert gtok(TEXT, add_special_tokens=False).input_ids == ids
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in ids  # the special tokens stayed whole
    assert gtok.chat_template == TEMPLATE
    assert (gtok.bos_token_id, gtok.eos_token_id, gtok.pad_token_id) == (1, 3, 0)

    got = logits(back, ids)
    if outtype == "f32":
        torch.testing.assert_close(got, logits(model, ids), rtol=0, atol=1e-5)
    else:
        # The file must hold exactly the rounded weights, so its logits equal those of the model rounded the same
        # way (float32 compute); they differ from the f32 model's, but by far less than the logits themselves.
        dtype, bound = ROUNDING[outtype]
        torch.testing.assert_close(got, logits(rounded(model, family, lambda p: p.to(dtype).float()), ids),
                                   rtol=0, atol=1e-5)
        diff = (got - logits(model, ids)).abs().max()
        assert 0 < diff < bound * logits(model, ids).abs().max()


def test_q8_0_llama(tmp_path, tokenizer):
    """q8_0 (blocks of 32 weights, one f16 scale): the logits of the model whose weights went through llama.cpp's
    q8_0 quantise/dequantise (gguf.quants), on the q/k rows in the HF layout; smaller than f16."""
    model = save(tmp_path / "hf", "llama", tokenizer, tie=False)
    q8 = export_gguf(tmp_path / "hf", tmp_path / "gguf" / "m-q8_0.gguf", "q8_0")
    f16 = export_gguf(tmp_path / "hf", tmp_path / "gguf" / "m-f16.gguf", "f16")
    back, _ = load(q8)
    Q8 = gguf.GGMLQuantizationType.Q8_0

    def q8_0(p):
        return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(p.numpy(), Q8), Q8).copy())

    ids = tokenizer(TEXT, add_special_tokens=False).input_ids
    torch.testing.assert_close(logits(back, ids), logits(rounded(model, "llama", q8_0), ids), rtol=0, atol=1e-5)
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(q8).tensors}
    assert types["blk.0.attn_q.weight"] == types["output.weight"] == Q8
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert q8.stat().st_size < 0.7 * f16.stat().st_size


@pytest.mark.parametrize("tie", [True, False])
def test_output_weight_only_when_untied(tmp_path, tokenizer, tie):
    model = save(tmp_path / "hf", "qwen2", tokenizer, tie=tie)
    path = export_gguf(tmp_path / "hf", tmp_path / "gguf" / "m.gguf", "f32")
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert ("output.weight" in names) is (not tie)
    back, _ = load(path)
    assert back.config.tie_word_embeddings is tie
    ids = tokenizer(TEXT, add_special_tokens=False).input_ids
    torch.testing.assert_close(logits(back, ids), logits(model, ids), rtol=0, atol=1e-5)


def test_metadata_for_llama_cpp(tmp_path, tokenizer):
    """What llama.cpp reads where transformers does not: Qwen3's head_dim (16 here, not 128) as key/value length,
    GPT-2's FFN width and context; with those put into the config, transformers loads the same model."""
    model = save(tmp_path / "q3", "qwen3", tokenizer, head_dim=16)
    path = export_gguf(tmp_path / "q3", tmp_path / "q3" / "gguf" / "m.gguf", "f32")
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if k not in ("tokenizer.ggml.tokens",
                                                                            "tokenizer.ggml.merges")}
    assert fields["qwen3.attention.key_length"] == fields["qwen3.attention.value_length"] == 16
    assert (fields["qwen3.attention.head_count"], fields["qwen3.attention.head_count_kv"]) == (4, 2)
    assert fields["tokenizer.ggml.pre"] == "gpt-2" and fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["general.file_type"] == gguf.LlamaFileType.ALL_F32
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    assert shapes["blk.0.attn_q.weight"] == (64, 4 * 16) and shapes["blk.0.attn_q_norm.weight"] == (16,)
    assert_loads_with(path, model, head_dim=fields["qwen3.attention.key_length"])

    model = save(tmp_path / "g2", "gpt2", tokenizer, n_inner=96, n_positions=128)
    path = export_gguf(tmp_path / "g2", tmp_path / "g2" / "gguf" / "m.gguf", "f32")
    fields = gguf.GGUFReader(path).fields
    ffn, ctx = fields["gpt2.feed_forward_length"].contents(), fields["gpt2.context_length"].contents()
    assert (ffn, ctx) == (96, 128)
    assert_loads_with(path, model, n_inner=ffn, n_positions=ctx)


def assert_loads_with(path: Path, model, **config) -> None:
    """transformers loads the GGUF file, given the config values it does not read from it, as the same model."""
    cfg = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    for key, value in config.items():
        assert getattr(cfg, key) != value  # what it reads by itself is wrong
        setattr(cfg, key, value)
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=cfg, dtype=torch.float32)
    ids = list(range(4, 30))
    torch.testing.assert_close(logits(back.eval(), ids), logits(model, ids), rtol=0, atol=1e-5)


def test_refusals(tmp_path, tokenizer):
    save(tmp_path / "hf", "llama", tokenizer)
    with pytest.raises(UserError, match="q4_k") as err:
        export_gguf(tmp_path / "hf", tmp_path / "m.gguf", "q4_k")
    assert "\n" not in str(err.value) and "f32, f16, bf16, q8_0" in str(err.value)

    save_tiny_model(tmp_path / "bert", "bert")
    with pytest.raises(UserError, match="'bert'") as err:
        export_gguf(tmp_path / "bert", tmp_path / "m.gguf")
    assert "\n" not in str(err.value) and "llama, mistral, qwen2, qwen3, gpt2" in str(err.value)

    save_tiny_decoder(tmp_path / "wordpiece", "llama")  # a BERT WordPiece tokenizer
    with pytest.raises(UserError, match="WordPiece") as err:
        export_gguf(tmp_path / "wordpiece", tmp_path / "m.gguf")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("*.gguf"))


def test_failed_write_keeps_existing_file(tmp_path, tokenizer, monkeypatch):
    save(tmp_path / "hf", "llama", tokenizer)
    path = tmp_path / "out" / "m.gguf"
    path.parent.mkdir()
    path.write_bytes(b"an earlier export")

    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="disk full"):
        export_gguf(tmp_path / "hf", path, "f16")
    assert path.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.gguf"]  # no temporary file left behind
    monkeypatch.undo()
    export_gguf(tmp_path / "hf", path, "f16")
    assert path.read_bytes()[:4] == b"GGUF"
