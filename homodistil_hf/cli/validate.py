"""Checks the scripts run before loading weights or writing anything, each ending in a one-line `UserError`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import UserError

MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def check_output_dir(output_dir: str, resuming: bool = False, overwrite: bool = False) -> None:
    """The output folder must be writable, and must not hold a model or checkpoints a new run would overwrite."""
    path = Path(output_dir)
    existing = path.exists()
    if existing and not path.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file: pass a folder path")
    if existing and not resuming and not overwrite:
        held = [f for f in MODEL_FILES if (path / f).exists()] + sorted(p.name for p in path.glob("checkpoint-*"))
        if held:
            raise UserError(f"--output_dir {output_dir} already holds {', '.join(held[:3])}: pass a new "
                            "--output_dir, --resume_from_checkpoint to continue, or --overwrite_output_dir")
    # Probe writability without leaving anything behind (the folder is created only if it can be).
    probe_root = path if existing else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(probe_root, os.W_OK):
        raise UserError(f"--output_dir {output_dir} is not writable (no write permission on {probe_root}): "
                        "choose another folder")
    try:
        with tempfile.TemporaryFile(dir=probe_root):
            pass
    except OSError as err:
        raise UserError(f"--output_dir {output_dir} is not writable ({err.strerror}): choose another folder") from None


def check_seq_length(config, max_seq_length: int, flag: str = "--max_seq_length") -> None:
    """`max_seq_length` must fit the model's position embeddings (RoBERTa reserves padding_idx + 1 of them)."""
    limit = config.max_position_embeddings
    if config.model_type == "roberta":
        limit -= (config.pad_token_id or 1) + 1
    if max_seq_length > limit:
        raise UserError(f"{flag} {max_seq_length} is beyond the model's {limit} positions: use {flag} {limit} or "
                        "less")


def check_tokenizer(tokenizer, config, flag: str = "--tokenizer_name") -> None:
    """Every token id the tokenizer can produce must exist in the model's embeddings."""
    if len(tokenizer) > config.vocab_size:
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has "
                        f"{config.vocab_size}: they do not belong together; pass the teacher's tokenizer with "
                        f"{flag}")
