"""Corpora for task-agnostic distillation: load raw text (Hub dataset or local files), tokenise with the teacher's
tokenizer, and pack into fixed-length blocks (like the transformers `run_mlm.py` example, cached by `datasets`).
Conversational corpora (TRL's `messages` or `prompt`/`completion` columns) are rendered with the chat template and
carry `labels` masked to the assistant's or the completion's tokens (`chat_data`); `kd_positions` turns such labels
into the positions a causal LM's logit distillation term counts.

`ResumableMLMCollator` masks each batch from a generator seeded by the batch itself, so that a run resumed from a
checkpoint sees exactly the masks the uninterrupted run saw.

Also `builtin_corpus`: real English prose available on any machine with Python (the standard library's
docstrings), so the offline quickstart needs no download.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import pkgutil
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict, IterableDataset, load_dataset
from transformers import DataCollatorForLanguageModeling, TrainerCallback

from .chat_data import check_layout, detect_layout, encode_example
from .errors import UserError

TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def _builder_for(path: str, flag: str) -> str:
    from .validate import check_input_file

    # A file (not a folder), not empty, a known extension, UTF-8 text.
    p = check_input_file(path, flag, "text, JSON(L) or CSV", suffixes=TEXT_SUFFIXES)
    return TEXT_SUFFIXES[p.suffix.lower()]


def load_raw(dataset_name: str | None = None, dataset_config_name: str | None = None, train_file: str | None = None,
             validation_file: str | None = None, streaming: bool = False, validation_split_percentage: int = 0,
             cache_dir: str | None = None) -> DatasetDict | dict[str, IterableDataset]:
    """Raw text splits ('train', optionally 'validation') from the Hub or local files."""
    if (dataset_name is None) == (train_file is None):
        raise UserError("give the corpus as exactly one of --dataset_name (a Hub dataset) or --train_file (a local "
                        "text/JSON/CSV file)")
    if dataset_name is not None:
        try:
            raw = load_dataset(dataset_name, dataset_config_name, streaming=streaming, cache_dir=cache_dir)
        except Exception as err:  # datasets raises many types (offline, unknown name, bad config)
            raise UserError(f"--dataset_name {dataset_name}: could not load it ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200]}); check the name/config or use --train_file") from None
    else:
        builder = _builder_for(train_file, "--train_file")
        files = {"train": train_file}
        if validation_file is not None:
            if _builder_for(validation_file, "--validation_file") != builder:
                raise UserError("--validation_file must have the same format as --train_file")
            files["validation"] = validation_file
        kwargs = {"keep_linebreaks": True} if builder == "text" else {}
        try:
            raw = load_dataset(builder, data_files=files, streaming=streaming, cache_dir=cache_dir, **kwargs)
        except Exception as err:  # datasets wraps a decode error of a file (binary past the sniffed start)
            if not _caused_by(err, UnicodeDecodeError):
                raise
            named = f"--train_file {train_file}" + (f" or --validation_file {validation_file}" * bool(validation_file))
            raise UserError(f"{named} is not UTF-8 text throughout: pass text files saved as UTF-8") from None
    if "validation" not in raw and validation_split_percentage > 0 and not streaming:
        split = raw["train"].train_test_split(test_size=validation_split_percentage / 100, seed=0)
        raw = DatasetDict(train=split["train"], validation=split["test"])
    return raw


def _caused_by(err: BaseException, kind: type[BaseException]) -> bool:
    """Whether `err` or an exception it was raised from is a `kind`."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def text_column(dataset, name: str | None = None) -> str:
    """The text column: `name`, else 'text', else the first column."""
    columns = list(dataset.column_names or []) if dataset.column_names is not None else ["text"]
    if name is not None:
        if name not in columns:
            raise UserError(f"--text_column_name {name!r} is not a column of the corpus (columns: "
                            f"{', '.join(columns)})")
        column, why = name, f"--text_column_name {name!r}"
    else:
        column = "text" if "text" in columns else columns[0]
        why = "the 'text' column" if column == "text" else f"the first column, {column!r} (there is no 'text' column),"
    dtype = getattr((getattr(dataset, "features", None) or {}).get(column), "dtype", "string")
    if dtype not in ("string", "large_string"):
        raise UserError(f"{why} would be used as the text, but it holds {dtype} values, not text: pass "
                        f"--text_column_name with a text column (columns: {', '.join(columns)})")
    return column


def pack_blocks(raw, tokenizer, max_seq_length: int, text_column_name: str | None = None, num_proc: int | None = None,
                overwrite_cache: bool = False, packing: bool = True, assistant_only_loss: bool = False,
                completion_only_loss: bool = False):
    """Tokenise every row and pack the token stream into blocks of `max_seq_length` (the tail is dropped), or, with
    `packing=False`, keep one row per example, truncated to `max_seq_length` (the collator pads).

    The layout comes from the columns (`chat_data.detect_layout`): plain text (every non-blank line tokenised with
    the tokenizer's special tokens, as always), a `messages` column, or `prompt`/`completion` columns (rendered with
    the chat template; see `chat_data`). Conversational layouts also get a `labels` column: the token ids, -100
    where `assistant_only_loss` / `completion_only_loss` exclude a token. Packing concatenates every column, so each
    token's label travels with it into its block. Document boundaries inside a block are not masked (as for
    the text corpus before): the first token of a document is a target of the previous document's last
    token when its own label allows it; with a loss mask it is a template or prompt token, so it is -100 anyway.
    Errors: `UserError` for a loss mask the layout cannot have, or conversational data without a chat template.
    """
    tokenized = tokenize_corpus(raw, tokenizer, text_column_name, num_proc, overwrite_cache, None if packing else
                                max_seq_length, assistant_only_loss, completion_only_loss)
    if not packing:
        return tokenized

    def group(batch):
        joined = {k: list(chain.from_iterable(batch[k])) for k in batch}
        total = (len(joined["input_ids"]) // max_seq_length) * max_seq_length
        return {k: [v[i:i + max_seq_length] for i in range(0, total, max_seq_length)] for k, v in joined.items()}

    out = {}
    for name, ds in tokenized.items():
        is_iterable = isinstance(ds, IterableDataset)
        out[name] = ds.map(group, batched=True, **({} if is_iterable else {
            "num_proc": num_proc, "load_from_cache_file": not overwrite_cache,
            "desc": f"Packing {name} into {max_seq_length}-token blocks"}))
    return out


def tokenize_corpus(raw, tokenizer, text_column_name: str | None = None, num_proc: int | None = None,
                    overwrite_cache: bool = False, max_length: int | None = None, assistant_only_loss: bool = False,
                    completion_only_loss: bool = False) -> dict:
    """Each split of `raw` tokenised one row per example (truncated to `max_length` if given), as `pack_blocks`
    describes: `input_ids`, `attention_mask`, and `special_tokens_mask` (text) or `labels` (conversational)."""
    split = next(iter(raw.values()))
    layout = detect_layout(split.column_names) if text_column_name is None else "text"
    conversational = layout == "messages"
    if layout == "prompt_completion":
        conversational = not isinstance(next(iter(split))["prompt"], str)
    check_layout(layout, tokenizer, assistant_only_loss, completion_only_loss, conversational)
    column = text_column(split, text_column_name) if layout == "text" else None
    remove = list(split.column_names) if split.column_names is not None else None

    def tokenize(batch):
        if layout == "text":
            texts = [t for t in batch[column] if t and not t.isspace()]
            return tokenizer(texts, return_special_tokens_mask=True,
                             **({} if max_length is None else {"truncation": True, "max_length": max_length}))
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        encoded = [encode_example(r, tokenizer, layout, assistant_only_loss, completion_only_loss) for r in rows]
        return {k: [e[k][:max_length] for e in encoded] for k in ("input_ids", "attention_mask", "labels")}

    is_iterable = isinstance(split, IterableDataset)
    map_kwargs = {} if is_iterable else {"num_proc": num_proc, "load_from_cache_file": not overwrite_cache}
    return {name: ds.map(tokenize, batched=True, remove_columns=remove, **map_kwargs,
                         **({} if is_iterable else {"desc": f"Tokenising {name}"})) for name, ds in raw.items()}


def kd_positions(labels: torch.Tensor) -> torch.Tensor:
    """Where a causal LM's logit distillation term counts: `labels` [B, T] (-100: no target) -> bool mask [B, T].

    The logits at position t predict the token at t + 1, so position t counts when `labels[:, t + 1] != -100`; the
    last position predicts a token outside the row and never counts. The same positions as the LM loss of
    `model(labels=labels)`, which shifts the labels the same way.
    """
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


@dataclass
class ResumableMLMCollator(DataCollatorForLanguageModeling):
    """Dynamic MLM masking that resuming from a checkpoint reproduces exactly.

    The stock collator draws masks from the global RNG, and the Trainer cannot restore that RNG exactly on resume:
    the dataloader collates one batch ahead, so the RNG state saved in a checkpoint is the one after the next batch
    was masked, and it is restored only after the first resumed batches were masked. Here each batch's masks come
    from its own generator, seeded by (`mask_seed`, `epoch`, the batch's token ids): masks are still new every epoch,
    the global RNG (dropout) is left alone, and a resumed run masks every batch as the uninterrupted run did.
    `MaskEpochCallback` keeps `epoch` up to date.
    """

    mask_seed: int = 0
    epoch: int = 0

    def torch_call(self, examples):
        digest = hashlib.blake2b(f"{self.mask_seed}:{self.epoch}:".encode(), digest_size=8)
        for example in examples:
            ids = example["input_ids"] if isinstance(example, Mapping) else example
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        self.generator = torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)
        return super().torch_call(examples)


class MaskEpochCallback(TrainerCallback):
    """Tells a `ResumableMLMCollator` which epoch it masks (also right after resuming mid-epoch)."""

    def __init__(self, collator: ResumableMLMCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = math.floor((state.epoch or 0) + 1e-9)


@dataclass
class CausalLMCollator:
    """Batches for a causal LM: `input_ids`, `attention_mask`, and `labels` (the model shifts them: the logits at t
    predict token t + 1), -100 on padding. Examples with a `labels` column (conversational data, see `pack_blocks`)
    keep their labels; others get their input ids. No masking; other columns (`token_type_ids`,
    `special_tokens_mask`) are dropped, since decoders take neither. `max_length`: pad every batch to this length
    (unpacked rows), else to the longest row.

    Unlike `DataCollatorForLanguageModeling(mlm=False)`, labels are not cleared where a token equals the pad id:
    decoder tokenizers often pad with their end-of-text token (see `ensure_pad_token`), which is a real target
    inside packed text.
    """

    tokenizer: object
    keys: tuple[str, ...] = ("input_ids", "attention_mask")
    max_length: int | None = None

    def __call__(self, examples):
        features = [{k: e[k] for k in self.keys if k in e} for e in examples]
        padding = {"padding": "max_length", "max_length": self.max_length} if self.max_length else {}
        batch = self.tokenizer.pad(features, return_tensors="pt", **padding)
        if all("labels" in e for e in examples):
            labels = torch.full_like(batch["input_ids"], -100)
            left = getattr(self.tokenizer, "padding_side", "right") == "left"
            for row, e in zip(labels, examples):
                given = torch.as_tensor(list(e["labels"]), dtype=labels.dtype)
                (row[len(row) - len(given):] if left else row[:len(given)]).copy_(given)
        else:
            labels = batch["input_ids"].clone()
        if "attention_mask" in batch:
            labels[batch["attention_mask"] == 0] = -100
        batch["labels"] = labels
        return dict(batch)


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token (most decoders: GPT-2, Llama) its end-of-text token as the pad token,
    so batches can be padded; packed blocks have no padding, and padded positions are masked out of every loss."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def builtin_corpus(path: str | Path, max_lines: int = 20000) -> Path:
    """Write English prose from the Python standard library's docstrings, one paragraph a line.

    Real text that every machine with Python has, so the offline quickstart needs no download.
    """
    seen, lines = set(), []
    names = sorted(m.name for m in pkgutil.iter_modules() if m.name in sys.stdlib_module_names
                   and not m.name.startswith("_") and m.name not in {"antigravity", "this", "idlelib", "tkinter",
                                                                      "turtle", "turtledemo"})
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated modules and attributes warn on access
            try:
                module = importlib.import_module(name)
            except Exception:  # some stdlib modules need optional system libraries
                continue
            docs = [getattr(obj, "__doc__", None) for obj in
                    [module] + [getattr(module, a, None) for a in dir(module) if not a.startswith("_")]]
        for doc in docs:
            if not isinstance(doc, str) or id(doc) in seen:
                continue
            seen.add(id(doc))
            for para in re.split(r"\n\s*\n", doc):
                text = " ".join(para.split())
                # Keep prose: sentences with mostly letters, not code, tables or signatures.
                letters = sum(c.isalpha() or c == " " for c in text)
                if len(text) > 60 and letters > 0.85 * len(text) and text[0].isupper() and text not in seen:
                    seen.add(text)
                    lines.append(text)
        if len(lines) >= max_lines:
            break
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines[:max_lines]) + "\n")
    return path


if __name__ == "__main__":  # python -m homodistil_hf.data OUT.txt
    out = builtin_corpus(sys.argv[1] if len(sys.argv) > 1 else "corpus.txt")
    print(f"wrote {sum(1 for _ in open(out))} lines to {out}")
