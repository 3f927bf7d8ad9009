"""run_distill.py end to end (offline, tiny models): the acceptance command of issue 2, JSON configs, the baseline
student inits, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModel, AutoModelForMaskedLM

from homodistil_hf.cli.run_distill import main

ROOT = Path(__file__).resolve().parents[1]


def _flags(teacher, corpus, out, *extra):
    return ["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--report_to", "none", "--use_cpu",
            "--save_strategy", "no", "--disable_tqdm", "true", *extra]


def test_acceptance_command(tiny_mlm_teacher, corpus, tmp_path):
    """The exact command of the issue, as a subprocess: terms exactly 0 at step 1, then growing; clean reload."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "run_distill.py"), "--teacher_name_or_path", str(tiny_mlm_teacher),
           "--train_file", str(corpus), "--output_dir", str(out), "--max_steps", "8", "--per_device_train_batch_size",
           "4", "--max_seq_length", "32", "--logging_steps", "1", "--alpha_mlm", "1", "--alpha_pred", "1",
           "--alpha_hidden", "1", "--alpha_attn", "1", "--report_to", "none", "--use_cpu", "--save_strategy", "no"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in history if "loss" in h]
    assert len(steps) == 8
    assert [steps[0][k] for k in ("loss_pred", "loss_hidden", "loss_attn")] == [0.0, 0.0, 0.0]
    for k in ("loss_pred", "loss_hidden", "loss_attn"):
        assert steps[-1][k] > steps[1][k] > 0
    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def test_json_config_and_pruning(tiny_mlm_teacher, corpus, tmp_path):
    config = {"teacher_name_or_path": str(tiny_mlm_teacher), "train_file": str(corpus), "output_dir": str(tmp_path / "o"),
              "max_steps": 12, "per_device_train_batch_size": 4, "max_seq_length": 32, "report_to": "none",
              "use_cpu": True, "save_strategy": "no", "target_hidden_size": 32, "target_num_attention_heads": 2,
              "target_intermediate_size": 48, "prune_every": 2, "disable_tqdm": True}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config))
    main([str(path)])
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "o")
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.intermediate_size) == (32, 2, 48)


@pytest.mark.parametrize("init, extra", [("truncate", []), ("random", ["--hidden_projection"])])
def test_baseline_student_inits(tiny_mlm_teacher, corpus, tmp_path, init, extra):
    out = tmp_path / init
    main(_flags(tiny_mlm_teacher, corpus, out, "--max_steps", "3", "--student_init", init, "--target_hidden_size",
                "32", "--target_num_attention_heads", "2", "--target_intermediate_size", "48", *extra))
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.hidden_size == 32


def test_headless_teacher_and_mlm_student(tiny_base_teacher, corpus, tmp_path):
    out = tmp_path / "o"
    metrics = main(_flags(tiny_base_teacher, corpus, out, "--max_steps", "2", "--student_head", "mlm",
                          "--logging_steps", "1"))
    assert metrics["train_loss"] > 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert history[0]["loss_mlm"] > 0 and "loss_pred" not in history[0]
    AutoModel.from_pretrained(out)


def test_user_errors_are_one_line(tiny_mlm_teacher, corpus, tmp_path):
    cmd = [sys.executable, str(ROOT / "run_distill.py"), *_flags(tiny_mlm_teacher, corpus, tmp_path / "o"),
           "--target_hidden_size", "40", "--target_num_attention_heads", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "valid head counts for hidden 40: 4" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_headless_teacher_reports_eval_discrepancy(tiny_base_teacher, corpus, tmp_path):
    """A head-less teacher (BertModel, like all-MiniLM-L6-v2) on raw text: batches have no labels, yet evaluation
    reports the distillation loss and each term, exactly 0 before any update (student = teacher copy)."""
    main(_flags(tiny_base_teacher, corpus, tmp_path / "o", "--max_steps", "4", "--validation_file", str(corpus),
                "--do_eval", "--eval_strategy", "steps", "--eval_steps", "4", "--eval_on_start", "true",
                "--max_eval_samples", "8", "--target_hidden_size", "32", "--prune_every", "2"))
    history = json.loads((tmp_path / "o" / "trainer_state.json").read_text())["log_history"]
    evals = [h for h in history if "eval_loss" in h]
    assert len(evals) >= 2, history  # step 0, step 4 (and the final evaluation of run_distill)
    assert evals[0]["eval_loss"] == 0.0 and evals[0]["eval_loss_hidden"] == 0.0
    assert evals[-1]["eval_loss"] > 0 and evals[-1]["eval_loss_attn"] >= 0
