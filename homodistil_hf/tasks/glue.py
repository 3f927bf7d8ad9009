"""GLUE data: the nine tasks from the Hub `glue` dataset, a folder in the original GLUE TSV layout, or CSV/JSON files.

Every source is normalized to the same columns: `sentence1`, optionally `sentence2`, `label` (a class id, or a float
score for regression; -1 on unlabelled test sets) and `idx` (the example's index, used in prediction files).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset

from ..errors import UserError
from ..validate import check_input_file
from .runtime import load_hub_dataset

logger = logging.getLogger("homodistil_hf")

GLUE_HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is laid out on the Hub and in the original TSV files, and how GLUE wants its predictions."""

    name: str
    hub_columns: tuple[str, ...]  # text columns of the Hub `glue` dataset
    labels: tuple[str, ...] | None  # GLUE's own label strings, in Hub id order; None for regression (stsb)
    label_names: tuple[str, ...] | None  # readable names (the Hub ClassLabel names), for config.id2label
    submission: tuple[str, ...]  # leaderboard file stems: one per test split
    tsv_text: tuple[str | int, ...]  # text columns of train/dev TSVs: header names, or positions without header
    tsv_label: str | int  # label column of train/dev TSVs: header name or position (-1: last)
    tsv_header: bool = True  # False for CoLA train/dev, which have no header row
    test_text: tuple[str, ...] = ()  # text columns of test.tsv (always with a header); default: tsv_text
    dev_files: tuple[str, ...] = ("dev.tsv",)
    test_files: tuple[str, ...] = ("test.tsv",)
    eval_splits: tuple[str, ...] = field(default=("validation",))
    test_splits: tuple[str, ...] = field(default=("test",))

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


_BINARY = ("0", "1")
GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask(
            "cola",
            ("sentence",),
            _BINARY,
            ("unacceptable", "acceptable"),
            ("CoLA",),
            (3,),
            1,
            tsv_header=False,
            test_text=("sentence",),
        ),
        GlueTask("sst2", ("sentence",), _BINARY, ("negative", "positive"), ("SST-2",), ("sentence",), "label"),
        GlueTask(
            "mrpc",
            ("sentence1", "sentence2"),
            _BINARY,
            ("not_equivalent", "equivalent"),
            ("MRPC",),
            ("#1 String", "#2 String"),
            "Quality",
        ),
        GlueTask(
            "qqp",
            ("question1", "question2"),
            _BINARY,
            ("not_duplicate", "duplicate"),
            ("QQP",),
            ("question1", "question2"),
            "is_duplicate",
        ),
        # STS-B: ten columns, the score in the last (the GLUE processors read it as line[-1]).
        GlueTask("stsb", ("sentence1", "sentence2"), None, None, ("STS-B",), ("sentence1", "sentence2"), -1),
        GlueTask(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("entailment", "neutral", "contradiction"),
            ("MNLI-m", "MNLI-mm"),
            ("sentence1", "sentence2"),
            "gold_label",
            dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
            test_files=("test_matched.tsv", "test_mismatched.tsv"),
            eval_splits=("validation", "validation_mismatched"),
            test_splits=("test", "test_mismatched"),
        ),
        GlueTask(
            "qnli",
            ("question", "sentence"),
            ("entailment", "not_entailment"),
            ("entailment", "not_entailment"),
            ("QNLI",),
            ("question", "sentence"),
            "label",
        ),
        GlueTask(
            "rte",
            ("sentence1", "sentence2"),
            ("entailment", "not_entailment"),
            ("entailment", "not_entailment"),
            ("RTE",),
            ("sentence1", "sentence2"),
            "label",
        ),
        GlueTask(
            "wnli",
            ("sentence1", "sentence2"),
            _BINARY,
            ("not_entailment", "entailment"),
            ("WNLI",),
            ("sentence1", "sentence2"),
            "label",
        ),
    )
}
_HUB_SPLITS = {"validation_matched": "validation", "test_matched": "test"}  # MNLI's Hub split names -> ours


def get_task(name: str) -> GlueTask:
    """The GLUE task `name` (case-insensitive, 'sst-2' / 'sts-b' accepted), or a `UserError`."""
    key = name.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise UserError(f"--task_name {name!r} is not a GLUE task: use one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


@dataclass
class GlueData:
    """Normalized splits plus what the model and metrics need to know about the labels."""

    splits: DatasetDict
    name: str  # task name, or 'custom' for CSV/JSON files without --task_name
    is_regression: bool
    labels: list[str] | None  # label string of each class id (GLUE's own strings for GLUE tasks); None: regression
    label_names: list[str] | None  # readable class names for config.id2label
    task: GlueTask | None = None

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.labels)

    @property
    def has_pair(self) -> bool:
        first = next(iter(self.splits.values()))
        return "sentence2" in first.column_names

    @property
    def metric_task(self) -> str:
        """The GLUE metric set to report: the task's own, or for custom files stsb-like / mrpc-like / accuracy."""
        if self.task is not None:
            return self.task.name
        if self.is_regression:
            return "stsb"
        return "mrpc" if self.num_labels == 2 else "mnli"

    def format_label(self, value) -> str:
        """A class id or score as written in prediction files (GLUE label strings, scores with 3 decimals)."""
        if self.is_regression:
            return f"{float(value):.3f}"
        return self.labels[int(value)] if int(value) >= 0 else ""


# --- the original GLUE TSV layout ----------------------------------------------------------------------------------


def _column_positions(header: list[str] | None, columns, path: Path) -> list[int]:
    positions = []
    for col in columns:
        if isinstance(col, int):
            positions.append(col)
        elif header is not None and col in header:
            positions.append(header.index(col))
        else:
            raise UserError(f"{path} has no column {col!r} (header: {header}): is it the GLUE file of this task?")
    return positions


def read_glue_tsv(path: str | Path, task: GlueTask, labelled: bool) -> Dataset:
    """Read one GLUE TSV exactly as GLUE ships it (no quoting; CoLA train/dev without header; MRPC's BOM)."""
    path = Path(path)
    # utf-8-sig drops MRPC's byte-order mark, so its first column is named 'Quality', not '\ufeffQuality'.
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as err:  # binary past the start that check_input_file reads
        raise UserError(f"{path} is not UTF-8 text ({err.reason}): pass the GLUE {task.name} TSV file, saved as "
                        "UTF-8") from None
    has_header = task.tsv_header or not labelled
    header = rows[0] if has_header and rows else None
    body = rows[1:] if has_header else rows
    text_cols = task.tsv_text if labelled else (task.test_text or task.tsv_text)
    text_pos = _column_positions(header, text_cols, path)
    label_pos = _column_positions(header, [task.tsv_label], path)[0] if labelled else None
    idx_name = next((c for c in ("index", "id") if header is not None and c in header), None)
    idx_pos = header.index(idx_name) if idx_name else None
    needed = max([p for p in text_pos + [label_pos or 0, idx_pos or 0] if p >= 0] + [0]) + 1
    out = {"sentence1": [], "label": [], "idx": []}
    if len(text_pos) > 1:
        out["sentence2"] = []
    skipped = 0
    for line_no, row in enumerate(body, start=2 if has_header else 1):
        if len(row) < needed:  # QQP train has a few malformed lines; the GLUE processors skip them too
            skipped += 1
            continue
        out["sentence1"].append(row[text_pos[0]])
        if len(text_pos) > 1:
            out["sentence2"].append(row[text_pos[1]])
        out["label"].append(_parse_label(row[label_pos], task, path, line_no) if labelled else _no_label(task))
        out["idx"].append(int(row[idx_pos]) if idx_pos is not None else len(out["idx"]))
    if skipped:
        logger.warning("%s: skipped %d malformed line(s)", path, skipped)
    if not out["label"]:
        raise UserError(f"{path} holds no examples: pass a GLUE {task.name} TSV file")
    return Dataset.from_dict(out)


def _no_label(task: GlueTask):
    return -1.0 if task.is_regression else -1


def _parse_label(value: str, task: GlueTask, path: Path, line_no: int):
    value = value.strip()
    if task.is_regression:
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{path}:{line_no}: score {value!r} is not a number") from None
    if value not in task.labels:
        raise UserError(f"{path}:{line_no}: label {value!r} is not one of {', '.join(task.labels)} ({task.name})")
    return task.labels.index(value)


def load_glue_dir(data_dir: str | Path, task: GlueTask, need: set[str]) -> DatasetDict:
    """Load the splits in `need` ('train', 'eval', 'test') of a GLUE task folder (train.tsv, dev.tsv, test.tsv)."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        raise UserError(f"--data_dir {data_dir} is a file: pass the folder holding the GLUE {task.name} TSVs (e.g. "
                        f"{data_dir.parent})")
    if not data_dir.is_dir():
        raise UserError(f"--data_dir {data_dir} does not exist: pass the folder holding the GLUE {task.name} TSVs")
    files: dict[str, tuple[str, bool]] = {}
    if "train" in need:
        files["train"] = ("train.tsv", True)
    if "eval" in need:
        files.update({s: (f, True) for s, f in zip(task.eval_splits, task.dev_files)})
    if "test" in need:
        files.update({s: (f, False) for s, f in zip(task.test_splits, task.test_files)})
    for split, (name, _) in files.items():
        if not (data_dir / name).is_file():
            raise UserError(f"--data_dir {data_dir} has no {name} (needed for the {split} split of {task.name})")
        check_input_file(data_dir / name, "--data_dir", f"GLUE {task.name} TSV")  # not empty, UTF-8 text
    return DatasetDict({s: read_glue_tsv(data_dir / n, task, labelled) for s, (n, labelled) in files.items()})


def load_glue_hub(task: GlueTask, need: set[str], cache_dir: str | None = None) -> DatasetDict:
    """Load a task of the Hub `glue` dataset and rename its columns to the normalized ones."""
    hint = "pass --data_dir with the GLUE TSV files, or --train_file / --validation_file"
    raw = load_hub_dataset(GLUE_HUB_ID, task.name, cache_dir, hint)
    raw = DatasetDict({_HUB_SPLITS.get(k, k): v for k, v in raw.items()})
    wanted = (["train"] if "train" in need else []) + (list(task.eval_splits) if "eval" in need else [])
    wanted += list(task.test_splits) if "test" in need else []
    out = {}
    for split in wanted:
        ds = raw[split]
        for new, old in zip(("sentence1", "sentence2"), task.hub_columns):
            if new != old:
                ds = ds.rename_column(old, new)
        out[split] = ds
    return DatasetDict(out)


# --- CSV / JSON files ----------------------------------------------------------------------------------------------

_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}


def load_glue_files(
    files: dict[str, tuple[str, str]], task: GlueTask | None, cache_dir: str | None = None
) -> tuple[DatasetDict, list[str] | None, bool]:
    """Load `{split: (flag, path)}` CSV/JSON files; returns the normalized splits, the label strings and is_regression.

    Text columns are sentence1/sentence2 when present, else `sentence`, else the first one or two text columns.
    Labels come from the column 'label': strings or ints are classes (sorted), floats are regression scores.
    """
    raw = {}
    for split, (flag, path) in files.items():
        path = check_input_file(path, flag, "CSV, TSV or JSON(L)", suffixes=_FORMATS)  # a UTF-8 text file
        fmt = _FORMATS[path.suffix.lower()]
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        raw[split] = load_dataset(fmt, data_files=str(path), split="train", cache_dir=cache_dir, **kwargs)
        if split != "test" and "label" not in raw[split].column_names:
            raise UserError(f"{flag} {path} has no 'label' column (columns: {', '.join(raw[split].column_names)})")
    labelled = [raw[s] for s in raw if s != "test"]
    if task is not None:
        labels, is_regression = (list(task.labels) if task.labels else None), task.is_regression
    else:
        is_regression = bool(labelled) and labelled[0].features["label"].dtype.startswith("float")
        labels = None if is_regression else _sorted_labels({v for ds in labelled for v in ds["label"]})
        if labels is not None and not labels:
            raise UserError("no labelled file given: pass --train_file or --validation_file with a 'label' column")
    return DatasetDict({s: _normalize(ds, files[s], labels) for s, ds in raw.items()}), labels, is_regression


def _sorted_labels(values: set) -> list[str]:
    # Integer labels sort numerically (2 before 10); anything else as strings.
    if all(isinstance(v, int) for v in values):
        return [str(v) for v in sorted(values)]
    return sorted(str(v) for v in values if v is not None)


def _text_columns(ds: Dataset, flag_path) -> list[str]:
    cols = [c for c in ds.column_names if c not in ("label", "idx")]
    if "sentence1" in cols:
        return ["sentence1"] + (["sentence2"] if "sentence2" in cols else [])
    if "sentence" in cols:
        return ["sentence"]
    text = [c for c in cols if getattr(ds.features[c], "dtype", None) in ("string", "large_string")]
    if not text:
        raise UserError(f"{flag_path[0]} {flag_path[1]} has no text column: name them sentence1/sentence2")
    return text[:2]


def _normalize(ds: Dataset, flag_path, labels: list[str] | None) -> Dataset:
    text = _text_columns(ds, flag_path)
    out = {"sentence1": ds[text[0]]}
    if len(text) > 1:
        out["sentence2"] = ds[text[1]]
    if "label" not in ds.column_names:
        out["label"] = [-1.0 if labels is None else -1] * len(ds)
    elif labels is None:
        out["label"] = [float(v) for v in ds["label"]]
    else:
        out["label"] = [_label_id(v, labels, flag_path) for v in ds["label"]]
    out["idx"] = ds["idx"] if "idx" in ds.column_names else list(range(len(ds)))
    return Dataset.from_dict(out)


def _label_id(value, labels: list[str], flag_path) -> int:
    if value is None:
        return -1
    key = str(value).strip()
    if key in labels:
        return labels.index(key)
    raise UserError(f"{flag_path[0]} {flag_path[1]}: label {value!r} is not one of {', '.join(labels)}")


# --- model inputs and outputs --------------------------------------------------------------------------------------


def tokenize(data: GlueData, tokenizer, max_seq_length: int, pad_to_max_length: bool, **map_kwargs) -> DatasetDict:
    """Tokenize every split into model inputs (`input_ids`, ..., `labels`), dropping the text and `idx` columns."""
    max_len = min(max_seq_length, tokenizer.model_max_length)
    if max_len < max_seq_length:
        logger.warning(
            "--max_seq_length %d is above the model's maximum %d: using %d", max_seq_length, max_len, max_len
        )
    pair = data.has_pair

    def encode(batch):
        enc = tokenizer(
            batch["sentence1"],
            batch["sentence2"] if pair else None,
            truncation=True,
            max_length=max_len,
            padding="max_length" if pad_to_max_length else False,
        )
        enc["labels"] = batch["label"]
        return enc

    return DatasetDict(
        {
            split: ds.map(
                encode, batched=True, remove_columns=ds.column_names, desc=f"Tokenizing {split}", **map_kwargs
            )
            for split, ds in data.splits.items()
        }
    )


def logits_to_predictions(logits, is_regression: bool) -> np.ndarray:
    """Class ids (argmax) or regression scores from the model's output."""
    if isinstance(logits, tuple):  # models that also return hidden states put the logits first
        logits = logits[0]
    return np.squeeze(logits, axis=-1) if is_regression else np.argmax(logits, axis=-1)


def write_eval_predictions(path: str | Path, data: GlueData, idx, predictions, labels) -> None:
    """`index<TAB>prediction<TAB>label` for a dev set, in GLUE's label strings (or scores)."""
    with Path(path).open("w", encoding="utf-8") as f:
        f.write("index\tprediction\tlabel\n")
        for i, pred, gold in zip(idx, predictions, labels):
            f.write(f"{i}\t{data.format_label(pred)}\t{data.format_label(gold)}\n")


def write_submission(path: str | Path, data: GlueData, idx, predictions) -> None:
    """A GLUE leaderboard file: `index<TAB>prediction`, with GLUE's label strings (e.g. MRPC.tsv, MNLI-m.tsv)."""
    with Path(path).open("w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        for i, pred in zip(idx, predictions):
            f.write(f"{i}\t{data.format_label(pred)}\n")
