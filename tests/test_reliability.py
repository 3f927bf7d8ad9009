"""Issue 19, "nothing lost, nothing silently wrong": an export killed at any file move, a resume whose checkpoint
cannot reach the new target, a bfloat16-stored teacher (fp32 student), exported configs equal to the teacher's but
for the pruned widths, refusal hints that only suggest accepted values, a warning for a tiny --target_params, and a
decoder fine-tuned by run_glue without a pad token. (The one-line refusals are in tests/test_bad_inputs.py.)"""

from __future__ import annotations

import json
import logging
import os
import re
import signal

import pytest
import torch
from datasets import Dataset
from transformers import AutoModel, default_data_collator

import homodistil_hf.export as export
from homodistil_hf import HomoDistilConfig, HomoDistilTrainer
from homodistil_hf.arch import Shape, shape_of
from homodistil_hf.errors import UserError
from homodistil_hf.export import EXPORT_INFO, JOURNAL, export_model, recover_export
from homodistil_hf.loading import hub_failure, make_student
from homodistil_hf.pruning.pruner import STATE_FILE, check_checkpoint
from homodistil_hf.pruning.state import PruningState
from homodistil_hf.pruning.targets import check_target, resolve_target
from homodistil_hf.testing import tiny_config, tiny_decoder, tiny_decoder_config, tiny_model, tiny_tokenizer

DECODERS = ("llama", "mistral", "qwen2", "qwen3", "gpt2")
FAMILIES = ("bert", "roberta", "electra", *DECODERS)


def _model(family: str, seed: int = 0):
    return tiny_decoder(family, seed=seed) if family in DECODERS else tiny_model(family, "mlm", seed=seed)


def _data(n: int = 16, length: int = 16) -> Dataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 200, (n, length), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "labels": ids.tolist()})


def _args(tmp_path, **kw) -> HomoDistilConfig:
    base = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-4,
                report_to="none", save_strategy="no", use_cpu=True, logging_steps=1, prune_every=1, prune_start=0,
                prune_end=1, disable_tqdm=True)
    return HomoDistilConfig(**{**base, **kw})


# --- 2. an export killed at any file move ---------------------------------------------------------------------------


def _export(out, seed: int, hidden: int):
    """An export of a tiny BERT pruned to `hidden` (32 or 48), recording its seed, plus the run's other files."""
    model = tiny_model("bert", "mlm", seed=seed)
    state = PruningState.first(shape_of(model.config), Shape(hidden, hidden // 16, 16, 64), 2)
    export_model(model, out, state, physical=False, info={"teacher": "tiny", "seed": seed},
                 tokenizer=tiny_tokenizer())


def _check_one_export(out, allowed: dict[int, int]) -> int:
    """The folder loads, and its config, weights and homodistil.json are of one export (seed -> hidden size)."""
    model = AutoModel.from_pretrained(out)
    info = json.loads((out / EXPORT_INFO).read_text())
    seed = info["seed"]
    assert seed in allowed and model.config.hidden_size == allowed[seed] == info["shape"]["hidden"]
    assert model.embeddings.word_embeddings.weight.shape[1] == allowed[seed]
    if (out / "all_results.json").exists():  # the previous run's results only beside the previous export
        assert json.loads((out / "all_results.json").read_text())["seed"] == seed
    assert f"`{'tiny'}`" in (out / "README.md").read_text()
    return seed


def _count_moves(tmp_path) -> int:
    out = tmp_path / "count"
    _export(out, 0, 48)
    calls = []
    real = os.replace

    def counting(src, dst):
        calls.append(dst)
        return real(src, dst)

    export.os.replace = counting
    try:
        _export(out, 1, 32)
    finally:
        export.os.replace = real
    return len(calls)


def _killing_replace(n: int):
    """os.replace that SIGKILLs the process instead of the move numbered n (from 0)."""
    done, real = [0], os.replace

    def killing(src, dst):
        if done[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        done[0] += 1
        return real(src, dst)

    return killing


def test_export_killed_at_every_move_leaves_one_export(tmp_path):
    """SIGKILL (in a forked child) after each number of file moves of an export over a previous one: right after
    the kill the folder holds the previous export (nothing moved yet) or a journalled switch; the next export's
    recovery makes it one complete export (the new one once the switch was decided), and the next export run
    finishes cleanly."""
    moves = _count_moves(tmp_path)
    assert moves >= 5  # the journal, the tokenizer files, config, model card, homodistil.json, weights
    outcomes = set()
    for n in range(moves + 1):
        out = tmp_path / f"out{n}"
        _export(out, 0, 48)
        (out / "all_results.json").write_text(json.dumps({"seed": 0}))
        (out / "keep.txt").write_text("user file")
        pid = os.fork()
        if pid == 0:  # the child: export, killed at move n
            export.os.replace = _killing_replace(n)
            try:
                _export(out, 1, 32)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        assert killed == (n < moves), (n, status)
        if not (out / JOURNAL).exists():
            assert _check_one_export(out, {0: 48, 1: 32}) == (0 if killed else 1)
        journal = (out / JOURNAL).exists()
        recover_export(out)  # what the next export does first
        seed = _check_one_export(out, {0: 48, 1: 32})
        assert seed == (1 if journal or not killed else 0)
        outcomes.add(seed)
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
        assert (out / "keep.txt").read_text() == "user file"
        _export(out, 2, 32)  # the next export run
        assert _check_one_export(out, {2: 32}) == 2
        assert not (out / "all_results.json").exists()
    assert outcomes == {0, 1}


# --- 1. resume with another target --------------------------------------------------------------------------------


def _checkpoint(tmp_path, shape: Shape, initial: Shape, layers: int = 2):
    folder = tmp_path / "checkpoint-2"
    folder.mkdir(exist_ok=True)
    state = PruningState.first(initial, shape, layers)
    state.save(folder / STATE_FILE)
    return folder


def test_resume_refuses_a_checkpoint_that_cannot_reach_the_target(tmp_path):
    teacher = shape_of(tiny_config("bert"))  # hidden 64, 4 heads x 16, FFN 128
    mid = _checkpoint(tmp_path, Shape(48, 3, 16, 96), teacher)
    assert check_checkpoint(mid, Shape(48, 3, 16, 64), teacher, 2).shape == Shape(48, 3, 16, 96)  # reachable
    with pytest.raises(UserError) as err:
        check_checkpoint(mid, Shape(64, 4, 16, 128), teacher, 2)
    message = str(err.value)
    assert "hidden 48, 3 heads x 16, FFN 96" in message and "hidden 64, 4 heads x 16, FFN 128" in message
    assert "hidden" in message.split("(")[-1] and "FFN" in message.split("(")[-1]
    with pytest.raises(UserError, match="not made from this teacher"):
        check_checkpoint(mid, Shape(32, 2, 16, 64), teacher, 3)  # another depth
    gqa = shape_of(tiny_decoder_config("llama"))  # 4 heads in 2 groups
    with pytest.raises(UserError, match="not made from this teacher"):
        check_checkpoint(mid, Shape(48, 2, 16, 64, 1), gqa, 2)  # a state without key/value groups


def test_trainer_resume_path_refuses_the_checkpoint(tmp_path):
    teacher = tiny_model("bert", "mlm")
    args = _args(tmp_path, target_hidden_size=64, target_num_attention_heads=4, target_intermediate_size=64)
    trainer = HomoDistilTrainer(teacher=teacher, args=args, train_dataset=_data(), data_collator=default_data_collator)
    folder = _checkpoint(tmp_path, Shape(48, 3, 16, 96), shape_of(teacher.config))
    with pytest.raises(UserError, match="cannot reach the target"):
        trainer._load_from_checkpoint(str(folder))
    assert trainer.pruner.state.shape == shape_of(teacher.config)  # nothing restored


def test_pruning_log_names_the_widths_the_model_has(tmp_path, caplog):
    """A pruning step whose scheduled widths are wider than the state (a resumed, narrower student) logs the
    model's widths, not the schedule's."""
    from homodistil_hf.pruning.callback import PruningCallback

    teacher = tiny_model("bert", "mlm")
    args = _args(tmp_path, target_hidden_size=32, target_num_attention_heads=2, target_intermediate_size=64,
                 max_steps=20, prune_end=0.9)
    trainer = HomoDistilTrainer(teacher=teacher, args=args, train_dataset=_data(), data_collator=default_data_collator)
    trainer.state.max_steps = 20
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, PruningCallback))
    callback.on_train_begin(args, trainer.state, trainer.control)
    trainer.pruner.prune_to(Shape(32, 2, 16, 96))  # narrower hidden than the schedule's first step
    widths = callback.schedule.widths_at(1)
    assert widths.hidden > 32
    trainer.state.global_step = 1
    with caplog.at_level(logging.INFO, logger="homodistil_hf.pruning.callback"):
        callback.on_pre_optimizer_step(args, trainer.state, trainer.control)
    line = next(r.getMessage() for r in caplog.records if "pruned to" in r.getMessage())
    assert str(trainer.pruner.state.shape) in line and f"hidden {widths.hidden}," not in line


# --- 3. a bfloat16-stored teacher --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_bf16_teacher_gives_an_fp32_student_that_learns(tmp_path, family):
    teacher = _model(family).to(torch.bfloat16)
    assert make_student(teacher)[0].dtype == torch.float32
    args = _args(tmp_path, max_steps=4, learning_rate=1e-5, alpha_attn=0, save_strategy="no")
    trainer = HomoDistilTrainer(teacher=teacher, args=args, train_dataset=_data(), data_collator=default_data_collator)
    student = trainer.model
    assert {p.dtype for p in student.parameters()} == {torch.float32}
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    trainer.train()
    states = [s for s in trainer.optimizer.state.values() if "exp_avg" in s]
    assert states and all(s["exp_avg"].dtype == torch.float32 for s in states)
    changed = [((p.detach() != before[n]).float().mean().item(), p.numel()) for n, p in student.named_parameters()
               if p.requires_grad and p.grad is not None or n in before]
    share = sum(c * k for c, k in changed) / sum(k for _, k in changed)
    assert share > 0.6, share  # in bfloat16 most updates of lr 1e-5 round away (13-15% changed)


def test_student_dtype_flag_keeps_a_half_precision_student(tmp_path):
    teacher = tiny_model("bert", "mlm").to(torch.bfloat16)
    args = _args(tmp_path, student_dtype="bfloat16")
    trainer = HomoDistilTrainer(teacher=teacher, args=args, train_dataset=_data(), data_collator=default_data_collator)
    assert next(trainer.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(UserError, match="--student_dtype"):
        _args(tmp_path, student_dtype="int8")


# --- 4. the exported config is the teacher's but for the pruned widths ----------------------------------------------

WIDTH_FIELDS = {"hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size", "head_dim",
                "n_embd", "n_head", "n_inner", "embedding_size"}


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_config_equals_the_teachers_but_for_the_widths(tmp_path, family):
    teacher = _model(family)
    teacher.save_pretrained(tmp_path / "teacher")
    initial = shape_of(teacher.config)
    args = _args(tmp_path, target_hidden_size=32, target_num_attention_heads=2, target_intermediate_size=64,
                 alpha_attn=0, max_steps=4, prune_end=0.5)
    trainer = HomoDistilTrainer(teacher=teacher, args=args, train_dataset=_data(), data_collator=default_data_collator)
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    saved_teacher = json.loads((tmp_path / "teacher" / "config.json").read_text())
    exported = json.loads((out / "config.json").read_text())
    assert exported["hidden_size" if "hidden_size" in exported else "n_embd"] == 32 != initial.hidden
    for key in sorted(set(saved_teacher) | set(exported)):
        if key in WIDTH_FIELDS or key in ("dtype", "transformers_version"):
            continue
        assert exported.get(key, "<absent>") == saved_teacher.get(key, "<absent>"), key
    if (tmp_path / "teacher" / "generation_config.json").exists():
        want = json.loads((tmp_path / "teacher" / "generation_config.json").read_text())
        assert json.loads((out / "generation_config.json").read_text()) == want


# --- 13. refusal hints suggest accepted values only -----------------------------------------------------------------

HINTS = [  # (pattern, the flag its numbers are for)
    (r"valid head counts for hidden \d+: ([\d, ]+)", "heads"),
    (r"use hidden ([\d or]+)", "hidden"),
    (r"valid key/value head counts for \d+ heads: ([\d, ]+)", "kv_heads"),
    (r"valid head counts(?: with --target_num_key_value_heads \d+)?: ([\d, ]+)", "heads"),
    (r"heads in ([\d, ]+)", "heads"),
]


def _hinted(message: str) -> list[tuple[str, int]]:
    out = []
    for pattern, flag in HINTS:
        for found in re.finditer(pattern, message):
            out += [(flag, int(v)) for v in re.findall(r"\d+", found.group(1))]
    return out


@pytest.mark.parametrize("config", [
    tiny_config("bert"),
    tiny_decoder_config("gpt2"),
    tiny_decoder_config("llama", num_attention_heads=8, num_key_value_heads=2, head_dim=8),
    tiny_decoder_config("qwen3", num_attention_heads=8, num_key_value_heads=4, head_dim=8),
], ids=["bert", "gpt2", "llama-8-in-2", "qwen3-8-in-4"])
def test_every_hinted_value_is_accepted(config):
    teacher = shape_of(config)
    refusals = checked = 0
    for hidden in range(8, teacher.hidden + 1, 2):
        for heads in range(1, teacher.heads + 1):
            for kv in (None, *range(1, teacher.kv_heads + 1)) if teacher.kv_heads != teacher.heads else (None,):
                given = dict(hidden=hidden, heads=heads, intermediate=64, kv_heads=kv)
                try:
                    check_target(config, **given)
                    continue
                except UserError as err:
                    message = str(err)
                refusals += 1
                for flag, value in _hinted(message):
                    check_target(config, **{**given, flag: value})  # raises if a hint was wrong
                    checked += 1
    assert refusals and checked


def test_issue_case_six_heads_of_eight_in_two_groups():
    config = tiny_decoder_config("llama", num_attention_heads=8, num_key_value_heads=2, head_dim=8)
    with pytest.raises(UserError) as err:
        check_target(config, 64, 6, 64, kv_heads=2)
    hinted = _hinted(str(err.value))
    assert ("heads", 1) not in hinted and hinted
    for flag, value in hinted:
        check_target(config, **{"hidden": 64, "heads": 6, "intermediate": 64, "kv_heads": 2, flag: value})


# --- a tiny --target_params, offline Hub ids ---------------------------------------------------------------------


def test_tiny_target_params_warns_with_the_shape(tmp_path, caplog):
    config = tiny_config("bert", hidden_size=256, intermediate_size=1024)  # 1.7M backbone parameters
    with caplog.at_level(logging.WARNING, logger="homodistil_hf.pruning.targets"):
        shape = resolve_target(config, _args(tmp_path, target_params="1"))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "--target_params 1" in lines[0] and str(shape) in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="homodistil_hf.pruning.targets"):
        resolve_target(config, _args(tmp_path, target_params="400k"))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_hub_failure_names_the_cause(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:
        raise OSError("We couldn't connect to 'https://huggingface.co'") from ConnectionError("refused")
    except OSError as err:
        assert "could not be reached (no network)" in hub_failure(err)
    assert "no loadable config under that id" in hub_failure(OSError("404 Repository Not Found"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "offline mode is on" in hub_failure(OSError("anything"))


# --- 10. run_glue / run_squad on a stock decoder without a pad token ----------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_run_glue_pads_a_decoder_without_pad_token(tmp_path, family, monkeypatch):
    from homodistil_hf.cli.common import run_cli
    from homodistil_hf.cli.run_glue import main
    from homodistil_hf.testing import save_tiny_decoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = save_tiny_decoder(tmp_path / "model", family)
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    tokenizer_config["pad_token"] = None  # as stock Llama and GPT-2 tokenizers ship
    tokenizer_config.setdefault("eos_token", "[SEP]")
    (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = json.loads((model / "config.json").read_text())
    config.pop("pad_token_id", None)
    (model / "config.json").write_text(json.dumps(config))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(model).pad_token is None
    glue = tmp_path / "MRPC"
    glue.mkdir()
    head = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    rows = "".join(f"{i % 2}\t{i}\t{i + 1}\tthe man was good {i}\tshe had made a world\n" for i in range(12))
    for name in ("train", "dev"):
        (glue / f"{name}.tsv").write_text(head + rows)
    metrics = run_cli(main, ["--model_name_or_path", str(model), "--task_name", "mrpc", "--data_dir", str(glue),
                             "--do_train", "--do_eval", "--max_steps", "2", "--per_device_train_batch_size", "4",
                             "--max_seq_length", "32", "--output_dir", str(tmp_path / "out"), "--use_cpu",
                             "--report_to", "none", "--save_strategy", "no"])
    assert metrics is None or isinstance(metrics, dict)
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert "eval_accuracy" in results
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["pad_token_id"] is not None
