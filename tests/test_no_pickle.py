"""Outputs hold no pickle: after a run with checkpoints, every file in the output folder is safetensors, JSON, text
or markdown, except the Trainer's own optimizer / scheduler / RNG states inside checkpoint-* folders (torch.save
files it needs to resume). `training_args.bin` is written as `training_args.json` instead, checkpoints included.
The same for run_glue.py and run_squad.py (fine-tuning with the plain Trainer), whose outputs also hold TSV
predictions."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import homodistil_hf.cli.run_distill as run_distill
from homodistil_hf.cli import run_glue, run_squad
from homodistil_hf.testing import save_tiny_model, write_corpus

SAFE_SUFFIXES = {".safetensors", ".json", ".txt", ".md", ".tsv"}
TRAINER_STATE_FILES = {"optimizer.pt", "scheduler.pt"}  # plus rng_state*.pth, inside checkpoint-* only


def _is_pickle(data: bytes) -> bool:
    """A pickle stream (protocols 2-5 start with the PROTO opcode) or a torch.save zip archive (holds data.pkl)."""
    return data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:4] == b"PK\x03\x04"


def _check_folder(out: Path) -> list[Path]:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        rel = path.relative_to(out)
        in_checkpoint = rel.parts[0].startswith("checkpoint-") and len(rel.parts) == 2
        trainer_state = in_checkpoint and (path.name in TRAINER_STATE_FILES or path.name.startswith("rng_state"))
        if trainer_state:
            continue
        assert path.suffix in SAFE_SUFFIXES, f"{rel}: not safetensors / JSON / text"
        assert not _is_pickle(path.read_bytes()), f"{rel} is a pickle"
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix in (".txt", ".md", ".tsv"):
            path.read_text(encoding="utf-8")
        elif path.suffix == ".safetensors":
            load_file(path)  # a real safetensors file
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pkl"))
    return files


@pytest.mark.parametrize("targets", [True, False], ids=["pruning", "plain_distillation"])
def test_outputs_hold_no_pickle(tmp_path, targets):
    teacher = save_tiny_model(tmp_path / "teacher", "bert", "mlm")
    corpus = write_corpus(tmp_path / "corpus.txt", 60)
    out = tmp_path / "out"
    shape = ["--target_hidden_size", "32", "--target_num_attention_heads", "2", "--target_intermediate_size", "48",
             "--prune_every", "2"] if targets else []
    run_distill.main(["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir", str(out),
                      "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--report_to", "none",
                      "--use_cpu", "--disable_tqdm", "true", "--log_level", "warning", "--max_steps", "6",
                      "--save_steps", "3", "--do_eval", "--validation_split_percentage", "20", "--eval_strategy",
                      "steps", "--eval_steps", "3", *shape])
    files = _check_folder(out)
    names = {str(p.relative_to(out)) for p in files}
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3", "checkpoint-6"]
    for checkpoint in checkpoints:
        assert f"{checkpoint}/training_args.json" in names
        assert f"{checkpoint}/model.safetensors" in names
        assert f"{checkpoint}/optimizer.pt" in names  # the Trainer's own, tolerated inside checkpoints only
        if targets:
            assert f"{checkpoint}/pruning_state.json" in names
            assert f"{checkpoint}/pruning_importance.safetensors" in names
    assert {"model.safetensors", "config.json", "all_results.json", "trainer_state.json"} <= names
    if targets:
        assert "homodistil.json" in names
    # The checkpoint's arguments are readable JSON with the run's values.
    saved = json.loads((out / "checkpoint-3" / "training_args.json").read_text())
    assert saved["max_steps"] == 6 and saved["save_steps"] == 3


FINE_TUNE = ["--do_train", "--do_eval", "--max_steps", "4", "--save_steps", "2", "--per_device_train_batch_size", "4",
             "--per_device_eval_batch_size", "8", "--max_seq_length", "32", "--use_cpu", "--report_to", "none",
             "--disable_tqdm", "true", "--log_level", "warning", "--seed", "0"]


def _check_fine_tuning(out: Path) -> None:
    files = _check_folder(out)
    names = {str(p.relative_to(out)) for p in files}
    assert {"model.safetensors", "config.json", "training_args.json", "all_results.json"} <= names
    assert [p.name for p in sorted(out.glob("checkpoint-*"))] == ["checkpoint-2", "checkpoint-4"]
    assert {"checkpoint-2/training_args.json", "checkpoint-4/training_args.json"} <= names
    assert json.loads((out / "training_args.json").read_text())["max_steps"] == 4


def test_run_glue_outputs_hold_no_pickle(tmp_path):
    model = save_tiny_model(tmp_path / "model", "bert", "seq_cls")
    words = "the man was good and she had made a little world of people who came after that year".split()
    for name, n in (("train", 16), ("dev", 8)):
        rows = [f"{' '.join(words[i % 7:i % 7 + 5])},{i % 2}" for i in range(n)]
        (tmp_path / f"{name}.csv").write_text("sentence,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    run_glue.main(["--model_name_or_path", str(model), "--train_file", str(tmp_path / "train.csv"),
                   "--validation_file", str(tmp_path / "dev.csv"), "--output_dir", str(out), *FINE_TUNE])
    _check_fine_tuning(out)
    assert (out / "eval_predictions_custom.tsv").is_file()


def test_run_squad_outputs_hold_no_pickle(tmp_path):
    model = save_tiny_model(tmp_path / "model", "bert", "qa")
    articles = []
    for a in range(4):
        context = f"the man was good and she had made {a} little world of people who came after that year"
        qas = [{"id": f"q{a}-{i}", "question": f"who came after {i}", "answers": [
            {"text": "people", "answer_start": context.index("people")}]} for i in range(3)]
        articles.append({"title": f"a{a}", "paragraphs": [{"context": context, "qas": qas}]})
    data = tmp_path / "squad.json"
    data.write_text(json.dumps({"version": "1.1", "data": articles}))
    out = tmp_path / "out"
    run_squad.main(["--model_name_or_path", str(model), "--validation_file", str(data), "--split_articles", "0.25",
                    "--doc_stride", "8", "--output_dir", str(out), *FINE_TUNE])
    _check_fine_tuning(out)
    assert (out / "eval_predictions.json").is_file()


def test_the_pickle_check_catches_pickles(tmp_path):
    """The check itself: a torch.save file or a raw pickle outside a checkpoint's trainer state fails it."""
    import pickle

    for name, write in (("weights.json", lambda p: torch.save({"w": torch.zeros(2)}, p)),
                        ("notes.txt", lambda p: p.write_bytes(pickle.dumps({"a": 1}))),
                        ("checkpoint-1/extra.safetensors", lambda p: p.write_bytes(pickle.dumps([1, 2]))),
                        ("training_args.bin", lambda p: p.write_bytes(b"x"))):
        folder = tmp_path / name.replace("/", "_")
        path = folder / name
        path.parent.mkdir(parents=True)
        write(path)
        with pytest.raises(AssertionError):
            _check_folder(folder)
