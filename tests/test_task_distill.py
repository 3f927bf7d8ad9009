"""Task-specific HomoDistil through run_glue.py / run_squad.py: a fine-tuned teacher distilled into a pruned task model."""

import json

import pytest
from test_run_glue import FAST, write_glue_dir
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from homodistil_hf.cli.run_glue import main as glue_main
from homodistil_hf.errors import UserError
from homodistil_hf.testing import save_tiny_model

TARGETS = ["--target_hidden_size", "32", "--target_num_attention_heads", "2", "--target_intermediate_size", "48",
           "--prune_every", "1", "--prune_end", "0.5"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("t") / "cls", head="seq_cls")


def test_glue_task_distillation_exports_a_pruned_classifier(teacher, tmp_path):
    data = write_glue_dir(tmp_path / "glue", "mrpc")
    out = tmp_path / "out"
    metrics = glue_main(["--teacher_name_or_path", str(teacher), "--task_name", "mrpc", "--data_dir", str(data),
                         "--do_train", "--do_eval", "--max_steps", "6", "--logging_steps", "1", "--output_dir",
                         str(out), *TARGETS, *FAST])
    assert "eval_accuracy" in metrics and "eval_f1" in metrics
    model, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.intermediate_size) == (32, 2, 48)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    first = next(h for h in history if "loss" in h)
    # The student starts as the teacher: the logit KL term is exactly zero at the first step.
    assert first["loss_pred"] == 0.0 and first["loss_mlm"] > 0
    assert max(h.get("sparsity", 0) for h in history) > 0.5
    assert (out / "eval_predictions_mrpc.tsv").is_file()


def test_qa_task_distillation(tmp_path):
    from test_run_squad import FAST as SQUAD_FAST
    from test_run_squad import make_squad, write_json

    from homodistil_hf.cli.run_squad import main as squad_main

    teacher = save_tiny_model(tmp_path / "qa", head="qa")
    train = write_json(tmp_path / "train.json", make_squad(seed=1))
    dev = write_json(tmp_path / "dev.json", make_squad(n_articles=2, seed=2))
    out = tmp_path / "out"
    metrics = squad_main(["--teacher_name_or_path", str(teacher), "--train_file", str(train), "--validation_file",
                          str(dev), "--do_train", "--do_eval", "--max_steps", "4", "--logging_steps", "1",
                          "--output_dir", str(out), *TARGETS, *SQUAD_FAST])
    assert "eval_f1" in metrics
    model = AutoModelForQuestionAnswering.from_pretrained(out)
    assert model.config.hidden_size == 32
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert next(h for h in history if "loss" in h)["loss_pred"] == 0.0


def test_lora_and_pruning_are_refused(teacher, tmp_path):
    data = write_glue_dir(tmp_path / "glue", "mrpc")
    with pytest.raises(UserError, match="--use_lora cannot be combined"):
        glue_main(["--teacher_name_or_path", str(teacher), "--task_name", "mrpc", "--data_dir", str(data),
                   "--do_train", "--use_lora", "--output_dir", str(tmp_path / "o"), *TARGETS, *FAST])
    with pytest.raises(UserError, match="--model_name_or_path is required"):
        glue_main(["--task_name", "mrpc", "--data_dir", str(data), "--do_train", "--output_dir",
                   str(tmp_path / "o"), *FAST])
    assert not (tmp_path / "o").exists()
