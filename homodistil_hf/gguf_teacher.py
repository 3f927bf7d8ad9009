"""GGUF teachers: a llama.cpp checkpoint (`model.Q4_K_M.gguf`) as the teacher of a distillation.

transformers reads GGUF itself (`from_pretrained(folder, gguf_file=name)`, needs the `gguf` package): it dequantises
every tensor to a plain PyTorch weight, but the model keeps a `GgufHfQuantizer` and a `quantization_config`, so
`save_pretrained` refuses it ("quantized with gguf and is not serializable"), and the conversion takes a while
(~25 s for a 135M model on 2 cores). So the dequantised teacher is rebuilt as a plain model (same weights, no
quantizer, identical logits) and saved with its tokenizer to a cache folder, once: later runs load the cached
safetensors like any local checkpoint.

The cache lives in `<root>/gguf/<sha1 of the file's absolute path, size and mtime>/`, where root is `--cache_dir`,
else `$HOMODISTIL_CACHE`, else `~/.cache/homodistil_hf`. It is written to a temporary folder and renamed into place,
so an interrupted conversion never leaves a half-written cache behind.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .errors import UserError

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
CACHE_ENV = "HOMODISTIL_CACHE"
SOURCE_FILE = "homodistil_gguf_source.json"  # in a cache folder: which GGUF file it was converted from


def is_gguf_path(name_or_path: str | os.PathLike | None) -> bool:
    """Whether a teacher path names a GGUF file (by its extension)."""
    return name_or_path is not None and str(name_or_path).lower().endswith(".gguf")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted GGUF teachers are kept: `cache_dir`, else `$HOMODISTIL_CACHE`, else ~/.cache/homodistil_hf."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "homodistil_hf"


@dataclass(frozen=True)
class GgufTeacher:
    """A GGUF teacher file and the cache folder of its plain (dequantised) conversion."""

    path: Path
    cache: Path

    @property
    def folder(self) -> str:
        return str(self.path.parent)

    @property
    def file_name(self) -> str:
        return self.path.name

    @property
    def converted(self) -> bool:
        """Whether the cache already holds the converted teacher."""
        return (self.cache / SOURCE_FILE).is_file()

    def config(self):
        """The teacher's config: from the cache, or read from the GGUF metadata (cheap: no tensors are read)."""
        if self.converted:
            return AutoConfig.from_pretrained(self.cache)
        try:
            config = AutoConfig.from_pretrained(self.folder, gguf_file=self.file_name)
        except (OSError, ValueError, KeyError, NotImplementedError) as err:
            raise UserError(f"--teacher_gguf_file {self.path}: transformers cannot read it as a model "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}); "
                            "pass a GGUF of a supported architecture (llama, mistral, qwen2, qwen3, gpt2)") from None
        if getattr(config, "quantization_config", None) is not None:
            del config.quantization_config
        return config

    def convert(self) -> Path:
        """The cache folder with the plain teacher and its tokenizer, converting the GGUF file first if needed."""
        if self.converted:
            logger.info("GGUF teacher %s: using the converted copy in %s", self.path, self.cache)
            return self.cache
        logger.info("GGUF teacher %s: dequantising to a plain model (once; cached in %s)", self.path, self.cache)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.folder, gguf_file=self.file_name)
            model = AutoModelForCausalLM.from_pretrained(self.folder, gguf_file=self.file_name)
        except (OSError, ValueError, KeyError, NotImplementedError) as err:
            raise UserError(f"--teacher_gguf_file {self.path}: transformers could not load it "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}); "
                            "pass a GGUF of a supported architecture (llama, mistral, qwen2, qwen3, gpt2)") from None
        plain = dequantized_model(model)
        del model
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.cache.name}-", dir=self.cache.parent))
        try:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            stat = self.path.stat()
            (tmp / SOURCE_FILE).write_text(json.dumps(
                {"gguf_file": str(self.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}, indent=2))
            try:
                os.replace(tmp, self.cache)
            except OSError:
                if not self.converted:  # not another process finishing the same conversion first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.cache


def gguf_teacher(name_or_path: str | os.PathLike | None, gguf_file: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> GgufTeacher | None:
    """The GGUF teacher named by `--teacher_name_or_path` (a `.gguf` file) or by a folder plus `--teacher_gguf_file`,
    checked cheaply (the file exists, starts with the GGUF magic, the `gguf` package is installed); None for a
    regular checkpoint."""
    if gguf_file is None and not is_gguf_path(name_or_path):
        return None
    if gguf_file is not None:
        if name_or_path is None:
            raise UserError("--teacher_gguf_file needs --teacher_name_or_path: the folder that holds the GGUF file")
        if is_gguf_path(name_or_path):
            raise UserError(f"--teacher_name_or_path {name_or_path} is already a GGUF file: drop --teacher_gguf_file "
                            "or pass the folder that holds it")
        path = Path(name_or_path) / gguf_file
        flag = "--teacher_gguf_file"
    else:
        path, flag = Path(name_or_path), "--teacher_name_or_path"
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (no folder {path.parent})"
        raise UserError(f"{flag} {path}: no such GGUF file{hint}; pass the path of an existing .gguf file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise UserError(f"{flag} {path} is not a GGUF file (it does not start with the GGUF magic bytes); pass a "
                        "model file written by llama.cpp / gguf, or a save_pretrained folder as "
                        "--teacher_name_or_path")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"{flag} {path}: loading GGUF teachers needs the gguf package: pip install gguf")
    path = path.resolve()
    stat = path.stat()
    key = hashlib.sha1(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    return GgufTeacher(path, cache_root(cache_dir) / "gguf" / key)


def dequantized_model(model: PreTrainedModel) -> PreTrainedModel:
    """A plain copy of a model loaded from GGUF: the same weights (already dequantised by transformers) in a model
    built from the config without `quantization_config`, so it has no quantizer and `save_pretrained` works."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    dtype = next(model.parameters()).dtype
    # Built on the meta device and given the loaded tensors: no random initialisation, no second copy.
    with torch.device("meta"):
        plain = type(model)(config)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    # Non-persistent buffers (rotary inv_freq, ...) are not in the state dict: take the loaded model's.
    for name, buffer in model.named_buffers():
        owner, _, leaf = name.rpartition(".")
        module = plain.get_submodule(owner) if owner else plain
        persistent = leaf not in getattr(module, "_non_persistent_buffers_set", set())
        module.register_buffer(leaf, buffer, persistent=persistent)
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(plain, attr, None) is not None:
            setattr(plain, attr, None)
    plain.is_quantized = False
    plain.to(dtype)
    return plain.eval()
