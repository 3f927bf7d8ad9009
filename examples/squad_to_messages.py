"""SQuAD v1.1 (the official JSON) as a conversational corpus for distillation, with articles held apart for evaluation.

Writes `OUT/train.jsonl`: one row a question, `{"messages": [user: passage + question, assistant: the answer]}`
(TRL's conversational layout; pass it as --train_file with --assistant_only_loss). The last `--holdout_articles`
articles are left out of it and written as `OUT/validation.jsonl` (the same layout, for --validation_file and
perplexity) and, with `--mc_task_dir`, as a local lm-eval multiple-choice task (the question, its answer among
answers to other questions of the article) for --eval_tasks / --eval_tasks_include_path.

    python examples/squad_to_messages.py ../shared/data/squad_v1.1/dev-v1.1.json out/squad_chat \
        --holdout_articles 8 --mc_task_dir out/squad_chat/tasks
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from homodistil_hf.errors import UserError


def conversations(articles: list[dict]) -> list[dict]:
    """One messages row per question with an answer: the user gives the passage and asks, the assistant answers."""
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if qa["answers"]:
                    rows.append({"messages": [
                        {"role": "user", "content": f"{paragraph['context']}\n\nQuestion: {qa['question']}"},
                        {"role": "assistant", "content": qa["answers"][0]["text"].strip()}]})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("squad_json", help="SQuAD v1.1 JSON (e.g. ../shared/data/squad_v1.1/dev-v1.1.json)")
    parser.add_argument("output_dir", help="folder for train.jsonl, validation.jsonl")
    parser.add_argument("--holdout_articles", type=int, default=8, help="the last N articles are held apart")
    parser.add_argument("--mc_task_dir", default=None, help="write the held-out articles as an lm-eval MC task here")
    parser.add_argument("--mc_task_name", default="squad_mc_holdout", help="the task's name")
    args = parser.parse_args(argv)
    try:
        data = json.loads(Path(args.squad_json).read_text())["data"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{args.squad_json} is not a readable SQuAD JSON file ({type(err).__name__})") from None
    if not 0 < args.holdout_articles < len(data):
        raise UserError(f"--holdout_articles {args.holdout_articles}: pass 1 to {len(data) - 1} "
                        f"({args.squad_json} has {len(data)} articles)")
    train, held = data[:-args.holdout_articles], data[-args.holdout_articles:]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, articles in (("train", train), ("validation", held)):
        rows = conversations(articles)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        counts[name] = len(rows)
    if args.mc_task_dir:
        from homodistil_hf.llm_eval import squad_mc_examples, write_mc_task

        examples = squad_mc_examples(args.squad_json, [a["title"] for a in held])
        write_mc_task(args.mc_task_dir, examples, args.mc_task_name)
        counts["mc_examples"] = len(examples)
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    from homodistil_hf.cli.common import run_cli  # a UserError: one line on stderr, exit status 2

    run_cli(main)
