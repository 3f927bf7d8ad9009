"""run_glue.py end to end on tiny random models (offline): GLUE TSV layouts, CSV/JSON files, outputs, user errors."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest
from transformers import AutoConfig

from homodistil_hf.cli.common import run_cli
from homodistil_hf.cli.run_glue import main
from homodistil_hf.errors import UserError
from homodistil_hf.tasks.glue import GLUE_TASKS, read_glue_tsv
from homodistil_hf.testing import has_minilm, minilm_path, save_tiny_model, shared_data_dir

WORDS = "the man was good and she had made a little world of people who came after that year".split()
FAST = [
    "--use_cpu",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--per_device_train_batch_size",
    "8",
    "--per_device_eval_batch_size",
    "16",
    "--max_seq_length",
    "32",
    "--seed",
    "0",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def cls_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("cls") / "model", head="seq_cls")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A backbone with no task head, like all-MiniLM-L6-v2."""
    return save_tiny_model(tmp_path_factory.mktemp("base") / "model", head="base")


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))


def _write(path: Path, rows: list[list[str]], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\t".join(r) for r in rows) + "\n"
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")


def write_glue_dir(root: Path, task: str, n_train: int = 48, n_dev: int = 24, n_test: int = 12, seed: int = 0) -> Path:
    """A folder in the original GLUE layout of `task` with random sentences (quotes included: QUOTE_NONE matters)."""
    rng = random.Random(seed)
    d = root / task
    if task == "mrpc":
        head = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
        for name, n in (("train", n_train), ("dev", n_dev)):
            rows = [
                [str(rng.randint(0, 1)), str(i), str(i + 1), '"' + _sentence(rng), _sentence(rng)] for i in range(n)
            ]
            _write(d / f"{name}.tsv", [head] + rows, bom=True)
        test = [[str(i), str(i), str(i + 1), _sentence(rng), _sentence(rng)] for i in range(n_test)]
        _write(d / "test.tsv", [["index"] + head[1:]] + test, bom=True)
    elif task == "cola":
        for name, n in (("train", n_train), ("dev", n_dev)):
            _write(d / f"{name}.tsv", [["gj04", str(rng.randint(0, 1)), "", _sentence(rng)] for _ in range(n)])
        _write(d / "test.tsv", [["index", "sentence"]] + [[str(i), _sentence(rng)] for i in range(n_test)])
    elif task == "stsb":
        head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
        for name, n in (("train", n_train), ("dev", n_dev)):
            rows = [
                [
                    str(i),
                    "main",
                    "f",
                    "2012",
                    "0",
                    "none",
                    "none",
                    _sentence(rng),
                    _sentence(rng),
                    f"{rng.uniform(0, 5):.3f}",
                ]
                for i in range(n)
            ]
            _write(d / f"{name}.tsv", [head + ["score"]] + rows)
        test = [
            [str(i), "main", "f", "2012", "0", "none", "none", _sentence(rng), _sentence(rng)] for i in range(n_test)
        ]
        _write(d / "test.tsv", [head] + test)
    elif task == "mnli":
        head = [
            "index",
            "promptID",
            "pairID",
            "genre",
            "sentence1_binary_parse",
            "sentence2_binary_parse",
            "sentence1_parse",
            "sentence2_parse",
            "sentence1",
            "sentence2",
        ]
        labels = ["entailment", "neutral", "contradiction"]
        for name, n in (("train", n_train), ("dev_matched", n_dev), ("dev_mismatched", n_dev + 3)):
            extra = ["label1"] if name == "train" else ["label1", "label2", "label3", "label4", "label5"]
            rows = []
            for i in range(n):
                lab = rng.choice(labels)
                rows.append(
                    [str(i), "1", "1e", "fiction", "(x)", "(y)", "(X)", "(Y)", _sentence(rng), _sentence(rng)]
                    + [lab] * len(extra)
                    + [lab]
                )
            _write(d / f"{name}.tsv", [head + extra + ["gold_label"]] + rows)
        for name, n in (("test_matched", n_test), ("test_mismatched", n_test + 2)):
            rows = [
                [str(i), "1", "1e", "fiction", "(x)", "(y)", "(X)", "(Y)", _sentence(rng), _sentence(rng)]
                for i in range(n)
            ]
            _write(d / f"{name}.tsv", [head] + rows)
    elif task == "rte":
        for name, n in (("train", n_train), ("dev", n_dev)):
            rows = [
                [str(i), _sentence(rng), _sentence(rng), rng.choice(["entailment", "not_entailment"])]
                for i in range(n)
            ]
            _write(d / f"{name}.tsv", [["index", "sentence1", "sentence2", "label"]] + rows)
        rows = [[str(i), _sentence(rng), _sentence(rng)] for i in range(n_test)]
        _write(d / "test.tsv", [["index", "sentence1", "sentence2"]] + rows)
    else:
        raise ValueError(task)
    return d


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def run(model: Path, out: Path, *args: str) -> dict:
    return main(["--model_name_or_path", str(model), "--output_dir", str(out), *FAST, *args])


# --- reading the GLUE layouts --------------------------------------------------------------------------------------


def test_read_glue_tsv_layouts(tmp_path):
    mrpc = read_glue_tsv(write_glue_dir(tmp_path, "mrpc") / "dev.tsv", GLUE_TASKS["mrpc"], labelled=True)
    assert len(mrpc) == 24 and mrpc[0]["sentence1"].startswith('"')  # a lone quote is text under QUOTE_NONE
    assert set(mrpc["label"]) <= {0, 1} and mrpc["idx"] == list(range(24))
    cola = read_glue_tsv(write_glue_dir(tmp_path, "cola") / "train.tsv", GLUE_TASKS["cola"], labelled=True)
    assert len(cola) == 48 and "sentence2" not in cola.column_names  # no header line was eaten
    stsb_dir = write_glue_dir(tmp_path, "stsb")
    stsb = read_glue_tsv(stsb_dir / "dev.tsv", GLUE_TASKS["stsb"], labelled=True)
    raw_scores = [float(r["score"]) for r in read_tsv(stsb_dir / "dev.tsv")]
    assert stsb["label"] == pytest.approx(raw_scores)
    test = read_glue_tsv(stsb_dir / "test.tsv", GLUE_TASKS["stsb"], labelled=False)
    assert set(test["label"]) == {-1.0} and test["idx"] == list(range(12))
    mnli = read_glue_tsv(write_glue_dir(tmp_path, "mnli") / "dev_mismatched.tsv", GLUE_TASKS["mnli"], labelled=True)
    gold = [r["gold_label"] for r in read_tsv(tmp_path / "mnli" / "dev_mismatched.tsv")]
    assert [GLUE_TASKS["mnli"].labels[i] for i in mnli["label"]] == gold


def test_read_glue_tsv_rejects_unknown_label(tmp_path):
    d = write_glue_dir(tmp_path, "rte")
    (d / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(UserError, match=r"dev.tsv:2: label 'maybe' is not one of entailment, not_entailment"):
        read_glue_tsv(d / "dev.tsv", GLUE_TASKS["rte"], labelled=True)


@pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data (real GLUE TSVs) is not present")
@pytest.mark.parametrize(
    "folder,task,n_dev,labels",
    [
        ("MRPC", "mrpc", 408, {0, 1}),
        ("CoLA", "cola", 1043, {0, 1}),
        ("RTE", "rte", 277, {0, 1}),
        ("SST-2", "sst2", 872, {0, 1}),
        ("STS-B", "stsb", 1500, None),
    ],
)
def test_real_glue_dev_files_parse_completely(folder, task, n_dev, labels):
    ds = read_glue_tsv(shared_data_dir() / "glue" / folder / "dev.tsv", GLUE_TASKS[task], labelled=True)
    assert len(ds) == n_dev
    if labels is None:
        assert 0.0 <= min(ds["label"]) and max(ds["label"]) <= 5.0 and len(set(ds["label"])) > 50
    else:
        assert set(ds["label"]) == labels
    assert all(s.strip() for s in ds["sentence1"])


# --- end to end ----------------------------------------------------------------------------------------------------


def test_mrpc_train_eval_predict(tmp_path, cls_model):
    data = write_glue_dir(tmp_path, "mrpc")
    out = tmp_path / "out"
    metrics = run(
        cls_model,
        out,
        "--task_name",
        "mrpc",
        "--data_dir",
        str(data),
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--max_steps",
        "4",
    )
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_accuracy", "eval_f1", "train_loss"} <= set(results)
    assert math.isfinite(results["train_loss"]) and results["eval_samples"] == 24
    assert metrics["eval_accuracy"] == pytest.approx(results["eval_accuracy"])
    rows = read_tsv(out / "eval_predictions_mrpc.tsv")
    assert len(rows) == 24 and set(rows[0]) == {"index", "prediction", "label"}
    gold = [r["Quality"] for r in read_tsv(data / "dev.tsv")]
    assert [r["label"] for r in rows] == gold
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(results["eval_accuracy"])
    sub = read_tsv(out / "MRPC.tsv")
    assert len(sub) == 12 and list(sub[0]) == ["index", "prediction"] and {r["prediction"] for r in sub} <= {"0", "1"}
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_stsb_regression_on_headless_backbone(tmp_path, base_model):
    data = write_glue_dir(tmp_path, "stsb")
    out = tmp_path / "out"
    results = run(
        base_model,
        out,
        "--task_name",
        "stsb",
        "--data_dir",
        str(data),
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--max_steps",
        "3",
        "--max_eval_samples",
        "20",
    )
    assert {"eval_pearson", "eval_spearmanr"} <= set(results) and "eval_accuracy" not in results
    assert -1.0 <= results["eval_pearson"] <= 1.0 and results["eval_samples"] == 20
    config = AutoConfig.from_pretrained(out)
    assert config.num_labels == 1 and config.architectures == ["BertForSequenceClassification"]
    rows = read_tsv(out / "eval_predictions_stsb.tsv")
    assert len(rows) == 20 and all(float(r["prediction"]) == float(r["prediction"]) for r in rows)
    sub = read_tsv(out / "STS-B.tsv")
    assert len(sub) == 12 and all(isinstance(float(r["prediction"]), float) for r in sub)


def test_mnli_matched_and_mismatched(tmp_path, cls_model):
    data = write_glue_dir(tmp_path, "mnli")
    out = tmp_path / "out"
    results = run(
        cls_model,
        out,
        "--task_name",
        "mnli",
        "--data_dir",
        str(data),
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--max_steps",
        "2",
        "--ignore_mismatched_sizes",
    )
    assert {"eval_accuracy", "eval_mm_accuracy"} <= set(results)
    assert results["eval_samples"] == 24 and results["eval_mm_samples"] == 27
    mm = read_tsv(out / "eval_predictions_mnli-mm.tsv")
    assert len(mm) == 27 and sum(r["prediction"] == r["label"] for r in mm) / 27 == pytest.approx(
        results["eval_mm_accuracy"]
    )
    labels = {"entailment", "neutral", "contradiction"}
    assert len(read_tsv(out / "MNLI-m.tsv")) == 12 and len(read_tsv(out / "MNLI-mm.tsv")) == 14
    assert {r["prediction"] for r in read_tsv(out / "MNLI-mm.tsv")} <= labels
    assert AutoConfig.from_pretrained(out).id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}


def test_cola_eval_only_reports_matthews(tmp_path, cls_model):
    data = write_glue_dir(tmp_path, "cola")
    results = run(cls_model, tmp_path / "out", "--task_name", "cola", "--data_dir", str(data), "--do_eval")
    assert set(k for k in results if k.startswith("eval_") and not k.endswith(("_runtime", "_second", "_time"))) == {
        "eval_matthews_correlation",
        "eval_loss",
        "eval_samples",
    }
    assert not (tmp_path / "out" / "model.safetensors").exists()  # nothing trained, nothing saved


def test_csv_and_json_files_with_string_labels(tmp_path, cls_model):
    rng = random.Random(1)
    rows = [{"text": _sentence(rng), "label": rng.choice(["neg", "pos"]), "idx": i} for i in range(30)]
    csv_path = tmp_path / "train.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "idx"])
        writer.writeheader()
        writer.writerows(rows)
    json_path = tmp_path / "dev.jsonl"
    json_path.write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    test_path = tmp_path / "test.json"
    test_path.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows[:5]))
    out = tmp_path / "out"
    results = run(
        cls_model,
        out,
        "--train_file",
        str(csv_path),
        "--validation_file",
        str(json_path),
        "--test_file",
        str(test_path),
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--max_steps",
        "2",
    )
    assert {"eval_accuracy", "eval_f1"} <= set(results)
    preds = read_tsv(out / "eval_predictions_custom.tsv")
    assert [r["label"] for r in preds] == [r["label"] for r in rows[:10]]
    assert {r["prediction"] for r in read_tsv(out / "predict_results.tsv")} <= {"neg", "pos"}
    assert AutoConfig.from_pretrained(out).id2label == {0: "neg", 1: "pos"}


def test_one_json_config_file(tmp_path, cls_model):
    data = write_glue_dir(tmp_path, "rte")
    config = {
        "model_name_or_path": str(cls_model),
        "task_name": "rte",
        "data_dir": str(data),
        "do_eval": True,
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "report_to": "none",
        "max_eval_samples": 10,
    }
    path = tmp_path / "rte.json"
    path.write_text(json.dumps(config))
    results = main([str(path)])
    assert results["eval_samples"] == 10 and "eval_accuracy" in results
    assert len(read_tsv(tmp_path / "out" / "eval_predictions_rte.tsv")) == 10


@pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data (real GLUE TSVs) is not present")
def test_real_mrpc_folder_tiny_model(tmp_path, cls_model):
    out = tmp_path / "out"
    results = run(
        cls_model,
        out,
        "--task_name",
        "mrpc",
        "--data_dir",
        str(shared_data_dir() / "glue" / "MRPC"),
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "40",
        "--max_predict_samples",
        "8",
        "--max_steps",
        "2",
    )
    assert results["train_samples"] == 32 and results["eval_samples"] == 40
    assert len(read_tsv(out / "MRPC.tsv")) == 8


# --- user errors: one line, nothing written ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,match",
    [
        (["--task_name", "mrcp", "--do_eval"], r"--task_name 'mrcp' is not a GLUE task"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/nope", "--do_eval"], r"--data_dir .*nope does not exist"),
        (["--task_name", "mnli", "--data_dir", "{tmp}/mrpc", "--do_eval"], r"has no dev_matched.tsv"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/mrpc", "--do_train", "--do_eval"], None),
        (["--train_file", "{tmp}/nolabel.csv", "--do_train"], r"--train_file .*nolabel.csv has no 'label' column"),
        (["--train_file", "{tmp}/missing.csv", "--do_train"], r"--train_file .*missing.csv does not exist"),
        (["--validation_file", "{tmp}/nolabel.csv", "--do_train"], r"--do_train needs --train_file"),
        (["--task_name", "rte", "--data_dir", "{tmp}/mrpc"], r"nothing to do"),
        (["--task_name", "rte", "--data_dir", "{tmp}/mrpc", "--do_eval"], r"dev.tsv has no column 'sentence1'"),
        (["--do_eval"], r"no data: pass --task_name"),
        (["--task_name", "rte", "--do_eval"], r"Hub dataset nyu-mll/glue \(rte\) could not be loaded.*--data_dir"),
        (["--task_name", "rte", "--data_dir", "{tmp}/mrpc", "--do_eval", "--lora_r", "0"], r"--lora_r must be"),
        (["--train_file", "{tmp}/mrpc", "--do_train"], r"--train_file .*mrpc is a directory: pass a CSV"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/mrpc/dev.tsv", "--do_eval"], r"--data_dir .*dev.tsv is a file"),
        (["--train_file", "{tmp}/binary.csv", "--do_train"], r"--train_file .*binary.csv is not UTF-8 text"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/binary-mrpc", "--do_eval"], r"dev.tsv is not UTF-8 text"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/mrpc", "--do_train", "--max_steps", "-5"],
         r"--max_steps must be a positive number .*got -5"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/mrpc", "--do_train", "--per_device_train_batch_size", "0"],
         r"--per_device_train_batch_size must be >= 1 \(got 0\)"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/mrpc", "--do_eval", "--per_device_eval_batch_size", "0"],
         r"--per_device_eval_batch_size must be >= 1"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/mrpc", "--do_eval", "--tokenizer_name", "{tmp}/no-tok"],
         r"--tokenizer_name .*no-tok does not exist"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/mrpc", "--do_eval", "--model_name_or_path",
          "{tmp}/mrpc/dev.tsv"], r"--model_name_or_path .*dev.tsv is a file: pass the model folder"),
        # Task-specific HomoDistil whose pruning would end after the last step (of --max_steps, or of the epochs).
        (["--task_name", "mrpc", "--data_dir", "{tmp}/mrpc", "--do_train", "--teacher_name_or_path", "{model}",
          "--target_hidden_size", "32", "--target_num_attention_heads", "2", "--max_steps", "4", "--prune_end", "9"],
         r"--prune_end 9 ends pruning at step 9, but the run has only 4 steps \(--max_steps 4"),
        (["--task_name", "mrpc", "--data_dir", "{tmp}/mrpc", "--do_train", "--teacher_name_or_path", "{model}",
          "--target_hidden_size", "32", "--target_num_attention_heads", "2", "--prune_end", "100"],
         r"--prune_end 100 .* only 18 steps \(--num_train_epochs 3, i.e. 18 steps"),
    ],
)
def test_user_errors_leave_output_dir_untouched(tmp_path, cls_model, args, match):
    write_glue_dir(tmp_path, "mrpc")
    binary = write_glue_dir(tmp_path / "binary", "mrpc")
    binary.rename(tmp_path / "binary-mrpc")
    (tmp_path / "binary-mrpc" / "dev.tsv").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "binary.csv").write_bytes(b"sentence,label\n\x00\x01\x02\xff\n")
    (tmp_path / "nolabel.csv").write_text("sentence,score\nhello,1\n")
    out = tmp_path / "out"
    out.mkdir()
    sentinel = out / "config.json"
    sentinel.write_text("previous run")
    args = [a.replace("{tmp}", str(tmp_path)).replace("{model}", str(cls_model)) for a in args]
    with pytest.raises(UserError, match=match or r"--output_dir .* already holds config.json"):
        run(cls_model, out, *args)
    assert sentinel.read_text() == "previous run" and sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_run_cli_prints_one_line_and_exits_2(tmp_path, cls_model, capsys):
    argv = [
        "--model_name_or_path",
        str(cls_model),
        "--task_name",
        "mrpc",
        "--data_dir",
        str(tmp_path / "x"),
        "--do_eval",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --data_dir") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_missing_model_is_a_user_error(tmp_path):
    data = write_glue_dir(tmp_path, "rte")
    with pytest.raises(UserError, match="--model_name_or_path .*no_model"):
        run(tmp_path / "no_model", tmp_path / "out", "--task_name", "rte", "--data_dir", str(data), "--do_eval")
    assert not (tmp_path / "out").exists()


# --- the must-show runs with a real pre-trained model (slow: python -m pytest -m slow) --------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not has_minilm() or shared_data_dir() is None, reason="needs all-MiniLM-L6-v2 and shared data"
)
@pytest.mark.parametrize(
    "task,folder,key",
    [("mrpc", "MRPC", "eval_f1"), ("stsb", "STS-B", "eval_spearmanr"), ("cola", "CoLA", "eval_matthews_correlation")],
)
def test_minilm_glue_short_run(tmp_path, task, folder, key):
    flags = (
        "--max_train_samples 320 --do_train --do_eval --use_cpu --report_to none --save_strategy no "
        "--num_train_epochs 10 --learning_rate 1e-4 --warmup_steps 0.1 --per_device_train_batch_size 16 "
        "--per_device_eval_batch_size 64 --seed 42"
    ).split()
    data = str(shared_data_dir() / "glue" / folder)
    results = main(["--model_name_or_path", str(minilm_path()), "--task_name", task, "--data_dir", data,
                    "--output_dir", str(tmp_path / task), *flags])  # fmt: skip
    print(json.dumps({k: v for k, v in results.items() if k.startswith("eval_")}, indent=1))
    assert math.isfinite(results[key])


# --- the example configs parse with the scripts' own dataclasses ---------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_example_configs_parse(path):
    from homodistil_hf.cli.common import OneLineArgumentParser
    from homodistil_hf.config import HomoDistilConfig, parse_param_count

    if path.name.startswith("glue_"):
        from homodistil_hf.cli.run_glue import GlueDataArguments as DataTrainingArguments
        from homodistil_hf.tasks.arguments import ModelArguments
    elif path.name.startswith("squad"):
        from homodistil_hf.cli.run_squad import SquadDataArguments as DataTrainingArguments
        from homodistil_hf.tasks.arguments import ModelArguments
    else:
        run_distill = pytest.importorskip("homodistil_hf.cli.run_distill")
        ModelArguments, DataTrainingArguments = run_distill.StudentArguments, run_distill.DataArguments  # noqa: N806
    raw = json.loads(path.read_text())
    raw.pop("fp16", None)  # fp16 / bf16 need a GPU at training time only, but keep parsing independent of the machine
    raw.pop("bf16", None)
    parser = OneLineArgumentParser((ModelArguments, DataTrainingArguments, HomoDistilConfig))
    _, data_args, args = parser.parse_dict(raw, allow_extra_keys=False)
    if path.name.startswith("distill_") and "homobert" not in path.name:  # decoder configs (GPU machines)
        assert args.kd_loss == "forward_kl" and args.teacher_dtype == "bfloat16"
        assert args.target_num_key_value_heads and args.importance == "taylor_structure"
    elif path.name.startswith("distill_"):
        assert args.temperature == 2.0 and args.pruning_schedule == "cubic" and args.prune_every == 10
        assert args.max_steps == 28000 and args.adam_epsilon == 1e-6 and data_args.max_seq_length == 128
        assert args.per_device_train_batch_size * 8 * args.gradient_accumulation_steps == 4096
        expected_lr = 3e-4 if parse_param_count(args.target_params) == 65_000_000 else 6e-4
        assert args.learning_rate == expected_lr
