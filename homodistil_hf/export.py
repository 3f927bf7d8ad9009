"""Export: write a pruned student as an ordinary, physically smaller model with a stock config, and its model card.

`export_model` takes a student in either training form (physically pruned, or full size with masks), produces a
compact copy whose attention scale is the stock `head_dim ** -0.5` (folded into the query weights), checks that its
config describes it exactly, and saves it with `save_pretrained` (safetensors). Files are written to a temporary
folder and moved into place one by one, so an interrupted export never leaves a half-written weights file.

`prune_to_shape` is the one-call API for users outside the Trainer: score a model, keep the best structures, done.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch import check_model_supported, get_adapter
from .errors import UserError
from .groups import build_groups
from .importance import Importance, MagnitudeImportance
from .pruner import Pruner
from .shapes import Shape, check_target, count_backbone_params
from .state import PruningState, selection_between
from .surgery import finalize_attention_scale, prune_model

EXPORT_INFO = "homodistil.json"
_TMP_PREFIX = ".homodistil-export-"


def compact_copy(model: nn.Module, state: PruningState | None = None, physical: bool = True) -> nn.Module:
    """A stand-alone, physically pruned copy of a student.

    `state` and `physical` describe the student: physically pruned already (its tensors hold `state`), or full size
    and masked to `state` (any masking hooks are not copied over).
    """
    student = copy.deepcopy(model)
    strip_own_hooks(student)
    if state is not None and not physical:
        full = PruningState.full(Shape.of_config(student.config), len(get_adapter(student).layers(student)))
        prune_model(student, selection_between(full, state))
    finalize_attention_scale(student)
    return student


def strip_own_hooks(model: nn.Module) -> None:
    """Remove the forward hooks this package installed (masks, activation importance) from a model copy; hooks of
    other libraries (e.g. accelerate's) stay."""
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [k for k, fn in hooks.items() if getattr(fn, "__module__", "").startswith(__package__)]:
                del hooks[key]


def check_stock(model: nn.Module) -> None:
    """Fail if the model's modules do not match what its stock config builds (no per-layer widths, attention
    width = hidden size)."""
    cfg = model.config
    adapter = get_adapter(model)
    for i, parts in enumerate(adapter.layers(model)):
        attn = parts.attention
        if (attn.num_attention_heads != cfg.num_attention_heads
                or attn.attention_head_size * attn.num_attention_heads != cfg.hidden_size
                or parts.ffn_in.out_features != cfg.intermediate_size
                or parts.query.in_features != cfg.hidden_size):
            raise ValueError(f"layer {i} does not match a stock config ({cfg.hidden_size} hidden, "
                             f"{cfg.num_attention_heads} heads, FFN {cfg.intermediate_size}): widths must be uniform "
                             "and attention width must equal hidden size")


def model_card(info: dict[str, Any]) -> str:
    """A Hub model card (README.md with YAML front matter) for an exported student."""
    teacher = info.get("teacher") or "unknown"
    shape, tshape = info.get("shape", {}), info.get("teacher_shape", {})
    recipe = info.get("recipe", {})
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- homodistil",
        "- distillation",
        "- pruning",
        f"base_model: {teacher}" if "/" in str(teacher) and not os.path.isdir(str(teacher)) else "",
        "---",
        "",
        f"# {info.get('model_name') or 'HomoDistil student'}",
        "",
        f"A compact {info.get('model_type', '')} distilled and pruned from `{teacher}` with HomoDistil (homotopic "
        "distillation, Liang et al., ICLR 2023) using `homodistil_hf`: the student started as an exact copy of the "
        "teacher and was pruned a little at a time while it was distilled.",
        "It is a stock model: load it with `AutoModel.from_pretrained` (no `trust_remote_code`).",
        "",
        "| | teacher | student |",
        "|---|---|---|",
        f"| backbone parameters | {info.get('teacher_params', 0):,} | {info.get('params', 0):,} |",
        f"| hidden size | {tshape.get('hidden', '')} | {shape.get('hidden', '')} |",
        f"| attention heads x head size | {tshape.get('heads', '')} x {tshape.get('head_dim', '')} | "
        f"{shape.get('heads', '')} x {shape.get('head_dim', '')} |",
        f"| FFN size | {tshape.get('intermediate', '')} | {shape.get('intermediate', '')} |",
        f"| layers | {info.get('num_layers', '')} | {info.get('num_layers', '')} |",
        "",
        "## Recipe",
        "",
    ]
    lines += [f"- {k}: `{v}`" for k, v in recipe.items()] or ["- (not recorded)"]
    lines += ["", "```python", "from transformers import AutoModel, AutoTokenizer",
              f"model = AutoModel.from_pretrained(\"{info.get('repo_id') or 'path/to/this/model'}\")", "```", ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _atomic_save(folder: Path, write) -> None:
    """Call `write(tmpdir)`, then move each file into `folder` (each move atomic; weights last)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{_TMP_PREFIX}*"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=folder))
    try:
        write(tmp)
        files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: p.suffix == ".safetensors")
        for src in files:
            dest = folder / src.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_model(model: nn.Module, output_dir: str | os.PathLike, state: PruningState | None = None,
                 physical: bool = True, tokenizer=None, info: dict[str, Any] | None = None) -> nn.Module:
    """Save a compact, stock copy of a (pruned) student to `output_dir`; returns the compact model.

    Writes the safetensors weights and config (`save_pretrained`), the tokenizer if given, a model card
    (`README.md`) and `homodistil.json` (teacher, shapes, parameter counts, recipe and which teacher structures
    each student structure came from).
    """
    compact = compact_copy(model, state, physical)
    check_stock(compact)
    info = dict(info or {})
    info.update(model_type=compact.config.model_type, shape=Shape.of_config(compact.config).as_dict(),
                params=count_backbone_params(compact.config),
                num_layers=len(get_adapter(compact).layers(compact)))
    if state is not None:
        info["kept_from_teacher"] = state.to_dict()

    def write(tmp: Path) -> None:
        compact.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(info))
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2, default=str))

    _atomic_save(Path(output_dir), write)
    return compact


@torch.no_grad()
def prune_to_shape(model: nn.Module, hidden_size: int | None = None, num_attention_heads: int | None = None,
                   intermediate_size: int | None = None, importance: Importance | None = None,
                   scores: dict[str, torch.Tensor] | None = None) -> PruningState:
    """Prune `model` in place to a stock shape in one call, outside any Trainer.

    Structures are ranked by `scores` (one tensor per group, as `importance.scores(build_groups(model))` returns:
    keys 'hidden', 'layer{i}.heads', 'layer{i}.qk', 'layer{i}.v', 'layer{i}.ffn') or by `importance` (default:
    weight magnitude; for `SensitivityImportance` call its `step()` after backward passes first). Returns which
    teacher structures were kept. The model is left with a stock config, ready for `save_pretrained`.
    """
    check_model_supported(model)
    initial = Shape.of_config(model.config)
    target = check_target(model.config, hidden_size or initial.hidden, num_attention_heads or initial.heads,
                          intermediate_size or initial.intermediate)
    pruner = Pruner(model, target, importance or MagnitudeImportance(), physical=True)
    if scores is None:
        scores = pruner.importance.scores(build_groups(model))
    missing = {g.name for g in pruner.groups} - set(scores)
    if missing:
        raise UserError(f"scores lack groups {sorted(missing)[:3]}...: pass one tensor per group")
    pruner.apply(pruner._broadcast(pruner.select(scores, target)))
    finalize_attention_scale(model)
    pruner.importance.close()
    return pruner.state
