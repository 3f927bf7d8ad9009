"""Outputs hold no pickle: after a run with checkpoints, every file in the output folder is safetensors, JSON, text
or markdown, except the Trainer's own optimizer / scheduler / RNG states inside checkpoint-* folders (torch.save
files it needs to resume). `training_args.bin` is written as `training_args.json` instead, checkpoints included."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import homodistil_hf.cli.run_distill as run_distill
from homodistil_hf.testing import save_tiny_model, write_corpus

SAFE_SUFFIXES = {".safetensors", ".json", ".txt", ".md"}
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
        elif path.suffix in (".txt", ".md"):
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
