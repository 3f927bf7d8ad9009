"""Evaluating causal LMs as LLM users do: lm-evaluation-harness tasks, held-out perplexity, and the results written
for a model card (a Markdown table of teacher and student, and the Hub's `model-index` metadata).

lm-eval (`pip install "homodistil_hf[lm-eval]"`, 0.4.x) runs offline on local task YAMLs (`dataset_path: json`);
`write_mc_task` writes one (a multiple-choice task from any question/choices/label examples) and `squad_mc_examples`
builds such examples from SQuAD v1.1 (a question, its answer among answers to other questions of the article).
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import torch

from .errors import UserError

_LM_EVAL_MISSING = 'lm-eval is not installed: pip install "homodistil_hf[lm-eval]"'


def run_lm_eval(model_dir, tasks: list[str], include_path: str | os.PathLike | None = None, batch_size: int = 8,
                limit: int | float | None = None, device: str = "cpu", tokenizer=None, num_fewshot: int | None = None,
                bootstrap_iters: int = 1000, apply_chat_template: bool = False) -> dict[str, dict[str, float]]:
    """Run lm-eval's `simple_evaluate` with its Hugging Face model class ("hf", `HFLM`) on `tasks`.

    `model_dir`: a folder holding a causal LM and its tokenizer (a stock exported student), or a loaded
    `PreTrainedModel` (then pass `tokenizer`). `include_path`: a folder of task YAMLs (local tasks); lm-eval's own
    tasks download their data from the Hub. `limit`: at most this many examples per task (a fraction if < 1).
    `apply_chat_template`: wrap each prompt in the tokenizer's chat template (instruct models), as lm-eval's flag.
    Returns {task: {metric: value, f"{metric}_stderr": value, "samples": examples evaluated}}; lm-eval's filter
    suffix (",none") is dropped. Errors: `UserError` when lm-eval is missing or a task is unknown.
    """
    try:
        import lm_eval
    except ImportError:
        raise UserError(_LM_EVAL_MISSING) from None
    manager = task_manager(tasks, include_path)
    if isinstance(model_dir, (str, os.PathLike)):
        if not Path(model_dir, "config.json").is_file():
            raise UserError(f"{model_dir} holds no model (config.json): pass the folder of a saved causal LM")
        model, model_args = "hf", {"pretrained": str(model_dir)}
    else:
        from lm_eval.models.huggingface import HFLM

        model, model_args = HFLM(pretrained=model_dir, tokenizer=tokenizer, batch_size=batch_size, device=device), None
    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=list(tasks), batch_size=batch_size,
                                  limit=limit, device=device, task_manager=manager, num_fewshot=num_fewshot,
                                  log_samples=False, bootstrap_iters=bootstrap_iters,
                                  apply_chat_template=apply_chat_template)
    results = {}
    for task, metrics in out["results"].items():
        # Metrics are keyed "metric,filter"; other keys ("alias", "sample_len") are not metrics.
        row = {key.split(",")[0]: value for key, value in metrics.items()
               if "," in key and isinstance(value, (int, float))}
        samples = out.get("n-samples", {}).get(task, {}).get("effective", metrics.get("sample_len"))
        results[task] = {**row, **({"samples": samples} if samples is not None else {})}
    return results


def task_manager(tasks: list[str], include_path: str | os.PathLike | None = None):
    """An lm-eval `TaskManager` that knows every task in `tasks`: the tasks of `include_path` alone when they are all
    there (indexing lm-eval's thousands of own tasks is skipped), else those and lm-eval's.
    Errors: `UserError` naming an unknown task (and the include path)."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError(_LM_EVAL_MISSING) from None
    if include_path is not None and not Path(include_path).is_dir():
        raise UserError(f"eval_tasks_include_path {include_path} is not a folder of task YAMLs")
    manager = TaskManager(include_path=str(include_path), include_defaults=False) if include_path else None
    if manager is None or any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" (nor in the include path {include_path})" if include_path else " (no include path given)"
        raise UserError(f"eval task {unknown[0]!r} is not an lm-eval task{where}: check the name (lm-eval --tasks "
                        "list) or pass the folder of its YAML")
    return manager


@torch.no_grad()
def perplexity(model, tokenizer, text_file: str | os.PathLike, max_seq_length: int, batch_size: int = 8,
               assistant_only_loss: bool = False, completion_only_loss: bool = False, packing: bool = True) -> float:
    """Token-level perplexity of a causal LM on a held-out file: exp(mean next-token cross-entropy, in nats).

    The file is read and tokenised as training corpora are (`data.tokenize_corpus`: a text file line by line, or a
    JSON(L) file of any layout; the loss masks keep only those targets), the token stream of all rows end to end
    is cut into non-overlapping blocks of `max_seq_length` (the last one shorter), and every token but the first
    of each block is a target (it has no context in its block). Without overlap a token sees on average half a block
    of context, so this is higher than a sliding-window perplexity. `packing=False` (as `--no-packing` trains):
    each row is a block of its own, truncated to `max_seq_length`, so a conversation's answer keeps its passage and
    question as context (with packing, blocks cut across conversations: SmolLM2-135M-Instruct on 40 SQuAD
    conversations, assistant tokens only, gave 1,268 / 380 / 150 at 256 / 512 / 1,024-token blocks).
    Errors: `UserError` when no token is a target.
    """
    from .data import load_raw, tokenize_corpus

    raw = load_raw(train_file=str(text_file))
    rows = tokenize_corpus(raw, tokenizer, assistant_only_loss=assistant_only_loss,
                           completion_only_loss=completion_only_loss)["train"]
    row_labels = rows["labels"] if "labels" in rows.column_names else rows["input_ids"]
    device = next(model.parameters()).device
    if packing:
        ids = [t for r in rows["input_ids"] for t in r]
        labels = [t for r in row_labels for t in r]
        blocks = [(ids[i:i + max_seq_length], labels[i:i + max_seq_length])
                  for i in range(0, len(ids), max_seq_length)]
    else:
        blocks = [(list(i[:max_seq_length]), list(lab[:max_seq_length])) for i, lab in zip(rows["input_ids"], row_labels)]
    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start:start + batch_size]
        width = max(len(b[0]) for b in batch)
        input_ids = torch.tensor([b[0] + [0] * (width - len(b[0])) for b in batch], device=device)
        target = torch.tensor([b[1] + [-100] * (width - len(b[1])) for b in batch], device=device)
        mask = torch.tensor([[1] * len(b[0]) + [0] * (width - len(b[0])) for b in batch], device=device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        target = target[:, 1:]
        total += torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), ignore_index=-100,
                                                   reduction="sum").item()
        count += int((target != -100).sum())
    if count == 0:
        raise UserError(f"{text_file}: no token to predict (empty, or nothing the loss mask keeps)")
    return math.exp(total / count)


def results_markdown(teacher: dict, student: dict) -> str:
    """A Markdown table of teacher and student results ({task: {metric: value}}, as `run_lm_eval` returns),
    one row per task and metric, "value ± stderr" where lm-eval gave one."""
    lines = ["| task | metric | teacher | student |", "| --- | --- | --- | --- |"]
    for task in sorted(set(teacher) | set(student)):
        t, s = teacher.get(task, {}), student.get(task, {})
        for metric in sorted(m for m in set(t) | set(s) if not m.endswith("_stderr") and m != "samples"):
            lines.append(f"| {task} | {metric} | {_cell(t, metric)} | {_cell(s, metric)} |")
    return "\n".join(lines) + "\n"


def _cell(row: dict, metric: str) -> str:
    if metric not in row:
        return "-"
    err = row.get(f"{metric}_stderr")
    return f"{row[metric]:.4f}" + (f" ± {err:.4f}" if isinstance(err, (int, float)) and math.isfinite(err) else "")


def model_index(results: dict, model_name: str, task_type: str = "text-generation") -> list[dict]:
    """The `model-index` entry of a model card's YAML front matter for `results` ({task: {metric: value}}), built
    with `huggingface_hub`'s `EvalResult` (each lm-eval task is the dataset, each metric a result)."""
    from huggingface_hub.repocard_data import EvalResult, eval_results_to_model_index

    evals = [EvalResult(task_type=task_type, dataset_type=task, dataset_name=task, metric_type=metric,
                        metric_name=metric, metric_value=value)
             for task in sorted(results) for metric, value in sorted(results[task].items())
             if not metric.endswith("_stderr") and metric != "samples"]
    return eval_results_to_model_index(model_name, evals)


def write_mc_task(folder: str | os.PathLike, examples: list[dict], name: str = "homodistil_mc") -> str:
    """Write a local lm-eval multiple-choice task: `folder/name.jsonl` (the examples) and `folder/name.yaml`.

    `examples`: {"question", "choices" (list of strings), "label" (index of the right choice), "context" (optional)}.
    The model is scored on the log-likelihood of " choice" after "context\\nQuestion: question\\nAnswer:" (metrics
    acc and acc_norm). Returns the task name, to pass to `run_lm_eval` with `include_path=folder`.
    """
    import yaml

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.jsonl", "w") as f:
        for e in examples:
            if not 0 <= e["label"] < len(e["choices"]):
                raise UserError(f"write_mc_task: label {e['label']} is not an index of choices {e['choices']}")
            prompt = (e["context"].strip() + "\n" if e.get("context") else "") + f"Question: {e['question']}\nAnswer:"
            f.write(json.dumps({"prompt": prompt, "choices": list(e["choices"]), "label": int(e["label"])}) + "\n")
    spec = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(folder / f"{name}.jsonl")}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{prompt}}",
            "doc_to_choice": "choices", "doc_to_target": "label",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
            "metadata": {"version": 1.0}}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return name


def squad_mc_examples(squad_json: str | os.PathLike, articles: list[str] | None = None, n_choices: int = 4,
                      seed: int = 0, with_context: bool = True) -> list[dict]:
    """Multiple-choice examples from SQuAD v1.1 (the official JSON): each question of the `articles` (titles;
    None: all), its first answer among `n_choices - 1` distractors drawn from the answers to other questions of the
    same article (so they are the same kind of span), in a random position (`seed`). A question whose article has
    too few other answers is skipped. `with_context`: give the passage too (reading comprehension, not recall)."""
    data = json.loads(Path(squad_json).read_text())["data"]
    rng = random.Random(seed)
    examples = []
    for article in data:
        if articles is not None and article["title"] not in articles:
            continue
        qas = [(p["context"], qa["question"], qa["answers"][0]["text"].strip())
               for p in article["paragraphs"] for qa in p["qas"] if qa["answers"]]
        pool = sorted({a for _, _, a in qas})
        for context, question, answer in qas:
            others = [a for a in pool if a.lower() != answer.lower()]
            if len(others) < n_choices - 1:
                continue
            choices = rng.sample(others, n_choices - 1)
            label = rng.randrange(n_choices)
            choices.insert(label, answer)
            examples.append({"question": question, "choices": choices, "label": label,
                             **({"context": context} if with_context else {})})
    return examples
