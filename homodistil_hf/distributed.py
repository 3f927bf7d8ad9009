"""Distributed policy: what pruning can do under DDP, FSDP and DeepSpeed, and the checks that say so.

`check_distributed_support(args)` runs before any weights load (the scripts call it; so does the trainer);
`check_accelerate_state` runs once accelerate has decided what the run really is. Each refusal is one line.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from .errors import UserError
from .registry import importance_class, importance_names


def physical_pruning(args, fsdp_enabled: bool = False) -> bool:
    """Whether pruning slices tensors (one process) or masks them (several processes, which cannot re-shape)."""
    if args.pruning_mode != "auto":
        return args.pruning_mode == "physical"
    return args.parallel_mode.value != "distributed" and not args.fsdp and not fsdp_enabled


def compacts_after_pruning(args, fsdp_enabled: bool = False) -> bool:
    """Whether a masked student is compacted (physically sliced, on every rank) once pruning is done: under several
    processes with `--pruning_mode auto`; `masks` keeps the masks to the end (`compaction.py`)."""
    return args.pruning_mode == "auto" and not physical_pruning(args, fsdp_enabled)


def accelerate_fsdp_on_cpu() -> bool:
    """Whether accelerate turns FSDP on for CPU processes. It does not: the FSDP branch of `AcceleratorState`
    runs only for accelerator distributed types, so `--fsdp` with `--use_cpu` would quietly be DDP, and it is
    refused. (The FSDP2 Trainer test patches accelerate inside its worker processes to take that branch on CPU, and
    this function with it; nothing else does.)"""
    return False


def sharded_importances() -> list[str]:
    """The `--importance` metrics that work from sharded (FSDP2) parameters (each metric's `works_on_shards`)."""
    return [name for name in importance_names() if importance_class(name).works_on_shards]


def check_sharded_pruning(args, fsdp_version: int, physical: bool | None = None) -> None:
    """Pruning under FSDP: FSDP2 only, in masks mode, with an importance metric that works from shards."""
    if int(fsdp_version) != 2:
        raise UserError(f"pruning under FSDP needs FSDP2, got FSDP version {fsdp_version}; set \"version\": 2 in "
                        "--fsdp_config (2 is the default)")
    if args.pruning_mode == "physical" or physical:
        raise UserError("--pruning_mode physical cannot run under FSDP (sharded weights cannot be re-shaped); use "
                        "--pruning_mode masks or auto")
    if args.importance not in ("auto", *sharded_importances()):  # (auto resolves to a metric that works on shards)
        raise UserError(f"--importance {args.importance} keeps per-weight statistics, which sharded (FSDP) "
                        "parameters do not hold whole on any rank; use --importance taylor_structure (one number "
                        "per structure, as good as the per-weight metric on the benchmark), or one of "
                        f"{', '.join(sharded_importances())}")


def check_distributed_support(args) -> None:
    """Up-front refusals, from the flags alone (before any weights load)."""
    if args.fsdp and (args.use_cpu or not torch.cuda.is_available()) and not accelerate_fsdp_on_cpu():
        # accelerate turns FSDP on only for accelerators: on CPU the Trainer would quietly wrap the model in DDP.
        raise UserError("--fsdp on CPU: accelerate enables FSDP only on GPUs, so this run would get DDP instead; "
                        "drop --fsdp (several CPU processes run DDP) or run on GPUs")
    if args.has_targets and args.deepspeed:
        raise UserError("pruning under DeepSpeed is not supported (ZeRO shards parameters and gradients); for "
                        "sharded training prune under FSDP2 instead (--fsdp with fsdp_config version 2, the "
                        "default, and --importance taylor_structure), or use DDP (no --deepspeed), see "
                        "README 'Multi-GPU'")
    if args.has_targets and args.fsdp:
        check_sharded_pruning(args, (getattr(args, "fsdp_plugin_args", None) or {}).get("fsdp_version", 2))
    if args.has_targets and getattr(args, "load_best_model_at_end", False) and compacts_after_pruning(args):
        raise UserError("--load_best_model_at_end cannot run with pruning on several processes: the student is "
                        "compacted once pruning is done, and a checkpoint from before holds the full-size student; "
                        "drop --load_best_model_at_end, or keep the masks to the end with --pruning_mode masks")


def check_accelerate_state(args, accelerator, model: nn.Module, fsdp_enabled: bool, pruning_physical: bool | None
                           ) -> None:
    """What accelerate turned on, which can differ from the flags: `--fsdp` that did not become FSDP (it would be
    DDP), or FSDP from `accelerate launch --use_fsdp` without `--fsdp` (the pruning checks apply then too).
    `pruning_physical` is None when nothing is pruned."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None) if fsdp_enabled else None
    if args.fsdp and plugin is None:
        raise UserError("--fsdp was given but accelerate did not enable FSDP (it does so only on GPUs), so this "
                        "run would get DDP instead; drop --fsdp or run on GPUs")
    if plugin is not None and pruning_physical is not None:
        check_sharded_pruning(args, getattr(plugin, "fsdp_version", 1), physical=pruning_physical)
    if plugin is not None and getattr(plugin, "fsdp_version", 1) == 2:
        shared = fsdp2_shared_output_param(model)
        if shared is not None:
            raise UserError(f"{type(model).__name__} cannot be sharded by accelerate's FSDP2: its output embedding "
                            f"shares a parameter with {shared} (e.g. BERT's masked-LM head ties decoder.bias to "
                            "predictions.bias), and accelerate shards the output embedding in a group of its own, "
                            "which torch refuses; run it with DDP (drop --fsdp), or distil a model without that tie")


def fsdp2_shared_output_param(model: nn.Module) -> str | None:
    """The name of a parameter that the output embedding shares with a module other than itself and the input
    embedding, or None. accelerate's FSDP2 preparation (`fsdp2_prepare_model`) shards the final norm and the
    embeddings as one group and every other module's own parameters elsewhere, so such a parameter would be in two
    groups, which `fully_shard` refuses (torch >= 2.13) at the first forward."""
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if get_out is not None else None
    if out is None:
        return None
    own = {id(out), id(model.get_input_embeddings())}
    params = {id(p) for p in out.parameters()}
    for name, module in model.named_modules():
        if id(module) not in own:
            for key, p in module.named_parameters(recurse=False):
                if id(p) in params:
                    return f"{name}.{key}" if name else key
    return None


def keep_output_capture(model: nn.Module) -> None:
    """transformers records hidden states and attentions through hooks chosen by `_can_record_outputs`, which it
    looks up by the model's class name; FSDP2's `fully_shard` swaps a sharded module's class for `FSDP<Class>`, so a
    model that records its own outputs and is the FSDP root (a headless `BertModel`) would return none. Register the
    swapped classes under their original outputs (once per class; a no-op without sharding)."""
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # pragma: no cover - other transformers versions
        return
    for module in model.modules():
        if (isinstance(module, PreTrainedModel) and type(module).__name__.startswith("FSDP")
                and getattr(module, "_can_record_outputs", None) and not _CAN_RECORD_REGISTRY.get(module)):
            _CAN_RECORD_REGISTRY[module] = module._can_record_outputs
