"""Failures that must not cost the user their work.

- A NaN / inf loss stops the run with one clear line; the last good checkpoint holds finite weights and a run
  resumes from it to the end.
- Weights that became non-finite in an optimizer step never reach a checkpoint or the export.
- The final export is atomic: a failure while writing leaves the previous export intact and no temporary folder.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, PreTrainedModel, TrainerCallback

import homodistil_hf.cli.run_distill as run_distill
from homodistil_hf.arch import Shape, shape_of
from homodistil_hf.cli.common import run_cli
from homodistil_hf.export import export_model
from homodistil_hf.testing import random_pruning_state, save_tiny_model, tiny_model, write_corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("nan")
    return save_tiny_model(root / "teacher", "bert", "mlm"), write_corpus(root / "corpus.txt", 50)


def _flags(teacher, corpus, out, *extra):
    return ["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--report_to", "none", "--use_cpu",
            "--disable_tqdm", "true", "--log_level", "warning", "--max_steps", "8", "--save_steps", "2",
            "--learning_rate", "1e-3", "--target_hidden_size", "32", "--target_num_attention_heads", "2",
            "--target_intermediate_size", "48", "--prune_every", "2", "--prune_end", "6", *extra]


class _Corrupt(TrainerCallback):
    """Puts a NaN into a weight at `step`, on `event` ('save': just after the checkpoint; 'step_end': after the
    optimizer step, before that step's checkpoint, as an overflowing update would)."""

    def __init__(self, step, event):
        self.step, self.event = step, event

    def _corrupt(self, state, model):
        if state.global_step == self.step:
            with torch.no_grad():
                model.bert.encoder.layer[0].intermediate.dense.weight[0, 0] = float("nan")

    def on_save(self, args, state, control, model=None, **kwargs):
        if self.event == "save":
            self._corrupt(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.event == "step_end":
            self._corrupt(state, model)


def _run_corrupted(monkeypatch, capsys, argv, callback):
    class Corrupted(run_distill.HomoDistilTrainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), callback], **kwargs)

    with monkeypatch.context() as m:
        m.setattr(run_distill, "HomoDistilTrainer", Corrupted)
        with pytest.raises(SystemExit) as info:
            run_cli(run_distill.main, argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def _finite(folder):
    tensors = load_file(folder / "model.safetensors")
    return all(torch.isfinite(t).all() for t in tensors.values())


def _resume_to_the_end(teacher, corpus, out, checkpoint):
    run_distill.main(_flags(teacher, corpus, out, "--resume_from_checkpoint", str(checkpoint)))
    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.config.hidden_size == 32


def test_nan_loss_stops_the_run_and_the_last_checkpoint_resumes(setup, tmp_path, monkeypatch, capsys):
    teacher, corpus = setup
    out = tmp_path / "out"
    line = _run_corrupted(monkeypatch, capsys, _flags(teacher, corpus, out), _Corrupt(4, "save"))
    assert "the loss became non-finite at step 4" in line and "--learning_rate" in line and "resume" in line
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / "model.safetensors").exists()  # no export of a broken model
    assert _finite(out / "checkpoint-4")
    _resume_to_the_end(teacher, corpus, out, out / "checkpoint-4")


def test_non_finite_weights_never_reach_a_checkpoint(setup, tmp_path, monkeypatch, capsys):
    """The update of step 4 overflows (the step's loss was finite): checkpoint-4 must not be written with it."""
    teacher, corpus = setup
    out = tmp_path / "out"
    line = _run_corrupted(monkeypatch, capsys, _flags(teacher, corpus, out), _Corrupt(4, "step_end"))
    assert "non-finite" in line and "step 4" in line
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert _finite(out / "checkpoint-2")
    _resume_to_the_end(teacher, corpus, out, out / "checkpoint-2")


def test_non_finite_weights_are_not_exported(setup, tmp_path, monkeypatch, capsys):
    """The last update overflows: the final export is refused, not written with NaNs."""
    teacher, corpus = setup
    out = tmp_path / "out"
    line = _run_corrupted(monkeypatch, capsys, _flags(teacher, corpus, out, "--save_strategy", "no"),
                          _Corrupt(8, "step_end"))
    assert "the weights became non-finite at step 8" in line and "model was not written" in line
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()


def test_huge_learning_rate_stops_with_one_line(setup, tmp_path, capsys):
    """A real divergence, not an injected one: the run stops with the message, never with NaN weights saved."""
    teacher, corpus = setup
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run_cli(run_distill.main, _flags(teacher, corpus, out, "--learning_rate", "1e30", "--max_grad_norm", "0",
                                         "--optim", "sgd"))
    assert info.value.code == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "non-finite" in lines[0]
    assert not (out / "model.safetensors").exists()
    for checkpoint in out.glob("checkpoint-*"):
        assert _finite(checkpoint), checkpoint.name


# --- atomic export -------------------------------------------------------------------------------------------------


def _export(model, out, seed):
    state = random_pruning_state(shape_of(model.config), 2, torch.Generator().manual_seed(seed),
                                 target=Shape(32, 2, 16, 48))
    return export_model(model, out, state, physical=False, info={"teacher": "tiny", "seed": seed})


def test_failed_export_keeps_the_previous_one(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _export(tiny_model("bert", "mlm", seed=0), out, seed=0)
    (out / "checkpoint-2").mkdir()  # the run's other files are not the export's business
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"model.safetensors", "config.json", "README.md", "homodistil.json"} <= {p.name for p in out.iterdir()}

    original = PreTrainedModel.save_pretrained

    def fails_midway(self, save_directory, *args, **kwargs):
        original(self, save_directory, *args, **kwargs)  # every file written...
        with open(f"{save_directory}/model.safetensors", "r+b") as f:
            f.truncate(100)  # ...then the weights are cut short, as by a full disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", fails_midway)
    with pytest.raises(OSError, match="No space left"):
        _export(tiny_model("bert", "mlm", seed=1), out, seed=1)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left
    monkeypatch.undo()

    # The previous export still loads; a successful export then replaces it whole.
    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert json.loads((out / "homodistil.json").read_text())["seed"] == 0
    _export(tiny_model("bert", "mlm", seed=1), out, seed=1)
    assert json.loads((out / "homodistil.json").read_text())["seed"] == 1
    assert (out / "model.safetensors").read_bytes() != before[out.joinpath("model.safetensors").relative_to(out)]
    assert (out / "checkpoint-2" / "trainer_state.json").read_text() == "{}"


def test_export_moves_weights_last_and_cleans_leftovers(tmp_path, monkeypatch):
    """Files move into place one by one, the weights last (a stop before the last move keeps the previous weights,
    never a truncated file); a temporary folder left by a killed export is removed by the next one."""
    import homodistil_hf.export as export

    out = tmp_path / "out"
    leftover = out / ".homodistil-export-killed"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half")
    moved = []
    replace = export.os.replace

    def recording_replace(src, dst):
        moved.append(str(dst).rsplit("/", 1)[-1])
        return replace(src, dst)

    monkeypatch.setattr(export.os, "replace", recording_replace)
    _export(tiny_model("bert", "mlm"), out, seed=0)
    assert moved[-1] == "model.safetensors" and len(moved) >= 4
    assert not leftover.exists()
