"""`HomoDistilTrainer`: a `transformers.Trainer` that distils a student from a frozen teacher and, when targets
are set, prunes the student on a schedule while it learns (HomoDistil).

Loss (one teacher pass, one student pass):
    alpha_mlm * student's own loss on the labels (MLM, next-token LM for decoders, or the task loss)
  + alpha_pred * T^2 KL(teacher || student) on the output logits (for causal LMs: --kd_loss forward_kl / reverse_kl /
    jsd at every non-padding position, computed in chunks of positions so that the vocabulary-sized softmaxes stay
    small)
  + alpha_hidden * hidden-state loss over mapped layers (kept channels against their teacher channels)
  + alpha_attn * attention loss over mapped layers (kept heads against their teacher heads)
The maths is in `losses.py`; this module only gathers the tensors and the counts.

Gradient accumulation: every term is a sum over its positions divided by the number of such positions in the whole
accumulation window (counted in `get_batch_samples`), so accumulating k micro-batches gives exactly the loss and
gradient of one k-times larger batch. The returned loss is therefore already scaled (`loss_is_scaled_for_ga`).
A causal LM's own loss is computed here from its logits (not by the model): the logits at t predict the label at
t + 1, so its count is the labelled tokens after the shift, `labels[..., 1:] != -100` (as transformers counts
`num_items_in_batch` for causal LMs).
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .arch import get_adapter
from .config import HomoDistilConfig
from .errors import UserError
from .export import export_model
from .loading import load_teacher
from .losses import (
    TERMS,
    attention_loss,
    causal_lm_loss,
    hidden_state_loss,
    kd_logits_loss,
    kd_logits_loss_chunked,
    kd_regression_loss,
    parse_layer_map,
)
from .pruning.callback import PruningCallback
from .pruning.importance import IMPORTANCES
from .pruning.pruner import Pruner, check_checkpoint
from .pruning.shape import Shape
from .pruning.sharding import all_reduce_sum, any_sharded, full_copy, local
from .pruning.state import PruningState
from .pruning.targets import count_backbone_params, resolve_target

logger = logging.getLogger(__name__)

class NonFiniteLossError(UserError):
    """The loss became NaN or inf: training stops so that no checkpoint holds broken weights."""


class _StaticMap:
    """Channel / head correspondence of a student cut from the teacher once (e.g. `--student_init truncate`)."""

    def __init__(self, state: PruningState):
        self.state = state

    def hidden_index(self):
        return None, self.state.hidden

    def head_index(self, layer: int):
        return None, self.state.layers[layer].heads


def needs_projection(student_hidden: int, teacher_hidden: int, args: HomoDistilConfig) -> bool:
    """Whether the hidden term needs a learned projection for a student that is not a pruned copy of the teacher;
    a `UserError` when one is needed but not asked for, or not possible."""
    if args.alpha_hidden == 0 or student_hidden == teacher_hidden:
        return False
    if not args.hidden_projection:
        raise UserError(f"the student's hidden size ({student_hidden}) differs from the teacher's ({teacher_hidden}) "
                        "and it is not a pruned copy: pass --hidden_projection to learn a projection, or "
                        "--alpha_hidden 0")
    if args.parallel_mode.value == "distributed":
        raise UserError("--hidden_projection is not supported with several processes; use one process or "
                        "--student_init teacher / truncate")
    return True


class HomoDistilTrainer(Trainer):
    """Distil (and prune) a student from a teacher inside the Hugging Face Trainer.

    Args:
        model: the student. `None` starts from an exact copy of the teacher (the homotopic start).
        teacher: a model, or a Hub id / local folder (default: `args.teacher_name_or_path`).
        args: a `HomoDistilConfig`.
        student_state: for a student cut from the teacher outside this trainer, which teacher structures it holds
            (e.g. from `loading.make_student(..., init="truncate")`), so losses pair kept channels and heads.
        **kwargs: everything `transformers.Trainer` takes (`train_dataset`, `data_collator`, `processing_class`, ...).
    """

    # Each term is normalised by counts over the whole accumulation window (see module docstring).
    loss_is_scaled_for_ga = True

    def __init__(self, model: PreTrainedModel | None = None, teacher: PreTrainedModel | str | None = None,
                 args: HomoDistilConfig | None = None, student_state: PruningState | None = None, **kwargs):
        if args is None:
            raise UserError("HomoDistilTrainer needs args=HomoDistilConfig(...)")
        if not isinstance(args, HomoDistilConfig):
            raise UserError(f"args must be a HomoDistilConfig, got {type(args).__name__}")
        teacher = teacher if teacher is not None else args.teacher_name_or_path
        if teacher is None:
            raise UserError("no teacher: pass teacher= or set --teacher_name_or_path")
        if isinstance(teacher, str | os.PathLike):
            teacher = load_teacher(str(teacher), gguf_file=args.teacher_gguf_file)
        # Weights left on "auto" (alpha_attn) depend on the teacher's family.
        args.resolve_for_teacher(get_adapter(teacher).causal_lm)
        if model is None:
            model = copy.deepcopy(teacher).train().requires_grad_(True)
        self._check_distributed_support(args)

        # Eager attention only when attention maps are distilled: it is slower and uses more memory.
        attn_impl = "eager" if args.alpha_attn > 0 else "sdpa"
        for m in (teacher, model):
            m.set_attn_implementation(attn_impl)
        if args.alpha_attn > 0:
            _disable_attention_dropout(model)

        target = resolve_target(teacher.config, args) if args.has_targets else None
        self.teacher_shape = Shape.of_config(teacher.config)
        self.pruner: Pruner | None = None
        self.correspondence: Pruner | _StaticMap | None = _StaticMap(student_state) if student_state else None
        student_shape = Shape.of_config(model.config)
        if target is not None and student_state is None and student_shape != target:
            if student_shape != self.teacher_shape:
                raise UserError(f"the student ({student_shape}) is neither the teacher's shape nor the target "
                                f"({target}): pruning starts from a full copy of the teacher")
            physical = args.pruning_mode == "physical" or (
                args.pruning_mode == "auto" and args.parallel_mode.value != "distributed" and not args.fsdp)
            importance = IMPORTANCES[args.importance].from_config(args)
            self.pruner = Pruner(model, target, importance, physical=physical)
            self.correspondence = self.pruner

        callbacks = list(kwargs.pop("callbacks", None) or [])
        if self.pruner is not None:
            callbacks.append(PruningCallback(self.pruner))
        super().__init__(model=model, args=args, callbacks=callbacks, **kwargs)

        self._check_accelerate_state(args)
        self.teacher = self._prepare_teacher(teacher)
        self.target = target
        self._setup_maps(model, teacher)
        # One store for the per-term metrics (as TRL's trainers keep theirs): summed detached values since the last
        # log ("train": each optimizer step adds its terms) or over one evaluation ("eval": each batch adds).
        self._metrics: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._metric_counts = {"train": 0, "eval": 0}
        self._terms_last_step = 0
        self._window: dict[str, torch.Tensor] | None = None
        self._saving_checkpoint = False
        self._teacher_has_logits: bool | None = None
        self._captured_class: type | None = None  # FSDP2: the sharded class whose outputs are registered
        unwrapped = self.accelerator.unwrap_model(self.model)
        self._student_takes_labels = "labels" in inspect.signature(unwrapped.forward).parameters
        # A causal LM (not a decoder with a task head): next-token loss and chunked logit KD, computed here.
        self._causal_lm = is_causal_lm(unwrapped)

    # --- setup ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_distributed_support(args: TrainingArguments) -> None:
        """Up-front refusals (the CLI calls this before loading any weights)."""
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
            _check_sharded_pruning(args, (getattr(args, "fsdp_plugin_args", None) or {}).get("fsdp_version", 2))

    def _check_accelerate_state(self, args: HomoDistilConfig) -> None:
        """What accelerate turned on, which can differ from the flags: `--fsdp` that did not become FSDP (it would be
        DDP), or FSDP from `accelerate launch --use_fsdp` without `--fsdp` (the pruning checks apply then too)."""
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None) if self.is_fsdp_enabled else None
        if args.fsdp and plugin is None:
            raise UserError("--fsdp was given but accelerate did not enable FSDP (it does so only on GPUs), so this "
                            "run would get DDP instead; drop --fsdp or run on GPUs")
        if plugin is not None and self.pruner is not None:
            _check_sharded_pruning(args, getattr(plugin, "fsdp_version", 1), physical=self.pruner.physical)
        if plugin is not None and getattr(plugin, "fsdp_version", 1) == 2:
            shared = fsdp2_shared_output_param(self.model)
            if shared is not None:
                raise UserError(f"{type(self.model).__name__} cannot be sharded by accelerate's FSDP2: its output "
                                f"embedding shares a parameter with {shared} (e.g. BERT's masked-LM head ties "
                                "decoder.bias to predictions.bias), and accelerate shards the output embedding in a "
                                "group of its own, which torch refuses; run it with DDP (drop --fsdp), or distil a "
                                "model without that tie")

    def _prepare_teacher(self, teacher: PreTrainedModel) -> nn.Module:
        """Frozen, eval mode, on the training device, in `--teacher_dtype` (auto: the training dtype); placed by
        accelerate for evaluation (no DDP wrapper: it never gets gradients). Under FSDP the teacher is not sharded
        either: every rank holds a full, frozen copy (`evaluation_mode` skips the FSDP wrapping)."""
        teacher.eval()
        teacher.requires_grad_(False)
        dtype = torch.bfloat16 if self.args.bf16 else (torch.float16 if self.args.fp16 else None)
        student_dtype = next(self.model.parameters()).dtype
        if student_dtype != torch.float32:
            dtype = student_dtype  # a student loaded in half precision: match it
        if self.args.teacher_dtype != "auto":
            dtype = getattr(torch, self.args.teacher_dtype)
        if dtype is not None:
            teacher.to(dtype=dtype)
        teacher.to(self.args.device)
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def _setup_maps(self, student: nn.Module, teacher: nn.Module) -> None:
        args = self.args
        s_layers = len(get_adapter(student).layers(student))
        t_layers = len(get_adapter(teacher).layers(teacher))
        self.layer_map = parse_layer_map(args.layer_map, s_layers, t_layers)
        self.projection: nn.Linear | None = None
        s_hidden, t_hidden = student.config.hidden_size, teacher.config.hidden_size
        if self.correspondence is None and needs_projection(s_hidden, t_hidden, args):
            self.projection = nn.Linear(s_hidden, t_hidden).to(args.device)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.projection is not None:
            optimizer.add_param_group({"params": list(self.projection.parameters()), "weight_decay": 0.0})
        return optimizer

    # --- accumulation-window counts ---------------------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts: dict[str, torch.Tensor] = {}
        for batch in batch_samples:
            for key, value in self._counts(batch).items():
                counts[key] = counts.get(key, 0) + value
        self._window = counts or None
        return batch_samples, num_items_in_batch

    @staticmethod
    def _counts(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Positions each term averages over: tokens, labelled tokens, examples."""
        ids = inputs.get("input_ids")
        mask = inputs.get("attention_mask")
        out = {}
        if ids is not None:
            out["tokens"] = mask.sum() if mask is not None else torch.tensor(ids.numel())
            out["examples"] = torch.tensor(ids.shape[0])
        labels = inputs.get("labels")
        if torch.is_tensor(labels) and ids is not None and labels.shape == ids.shape:
            out["labelled"] = (labels != -100).sum()
            out["next_tokens"] = (labels[..., 1:] != -100).sum()  # the targets of a causal LM (labels shifted)
        return out

    def _scale(self, kind: str, micro: dict[str, torch.Tensor], training: bool) -> torch.Tensor | float:
        """Divisor for a summed term: its count over the accumulation window in training, the micro-batch's in
        evaluation."""
        window = self._window if training and self._window else micro
        count = window.get(kind, micro.get(kind))
        return count.clamp(min=1) if torch.is_tensor(count) else max(float(count), 1.0)

    # --- loss -------------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        if self.is_fsdp_enabled and self._captured_class is not type(model):
            _keep_output_capture(model)
            self._captured_class = type(model)  # once sharded (the class is FSDP<Class> from then on)
        need_hidden = args.alpha_hidden > 0
        need_attn = args.alpha_attn > 0
        flags = {"output_hidden_states": True} if need_hidden else {}
        if need_attn:
            flags["output_attentions"] = True
        labels = inputs.get("labels")
        use_labels = args.alpha_mlm > 0 and labels is not None and self._student_takes_labels
        # A causal LM's own loss is computed from its logits below (chunked, exact counts): the model gets no labels.
        causal_labels = use_labels and self._causal_lm
        student_inputs = inputs if use_labels and not causal_labels else {
            k: v for k, v in inputs.items() if k != "labels"}
        s_out = model(**student_inputs, **flags)
        with torch.no_grad():
            t_out = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}, **flags)

        training = model.training
        micro = {k: v.to(s_out[0].device) if torch.is_tensor(v) else v for k, v in self._counts(inputs).items()}
        context = _TermInputs(s_out, t_out, inputs, micro, training, use_labels, causal_labels)
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        for term in TERMS:
            weight = getattr(args, term.alpha)
            if weight > 0 and (value := getattr(self, term.method)(context)) is not None:
                terms[term.name], weights[term.name] = value, weight

        loss = sum(weights[name] * value for name, value in terms.items())
        if not torch.is_tensor(loss):
            raise UserError("no loss term applies to this teacher/student/data: e.g. a teacher without a head and "
                            "--alpha_hidden 0 --alpha_attn 0; enable a term that both models support")
        if not torch.isfinite(loss.detach()).all():
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
            raise NonFiniteLossError(f"the loss became non-finite at step {self.state.global_step} ({detail}); "
                                     "training stopped before saving broken weights; lower --learning_rate or check "
                                     "the data, then resume from the last checkpoint")
        store = self._metrics["train" if training else "eval"]
        for name, value in terms.items():
            detached = value.detach()
            store[name] = store.get(name, torch.zeros_like(detached)) + detached
        if not training:
            self._metric_counts["eval"] += 1
        if not return_outputs:
            return loss
        # Evaluation gathers the outputs across batches: hand back the predictions, not the per-layer states asked
        # for the losses (their sequence lengths differ between batches, and they would only cost memory).
        return loss, type(s_out)(**{k: v for k, v in s_out.items() if k not in ("hidden_states", "attentions")})

    # --- the terms (see losses.TERMS): each a summed loss divided by its accumulation-window count ------------------
    def _own_term(self, c: _TermInputs) -> torch.Tensor | None:
        """The student's own loss on the labels: next-token LM (computed here from the logits, chunked, with exact
        counts), or the model's own loss (MLM, task)."""
        labels = c.inputs.get("labels")
        if c.causal_labels:
            return causal_lm_loss(c.s_out.logits, labels, "sum", self.args.kd_chunk_size) / self._scale(
                "next_tokens", c.micro, c.training)
        if not c.use_labels or getattr(c.s_out, "loss", None) is None:
            return None
        kind = "labelled" if "labelled" in c.micro else "examples"
        own = c.s_out.loss
        if kind == "labelled":
            # No token of this micro-batch is labelled (none was masked): the model's mean over zero labels is NaN,
            # and 0 * NaN is NaN. The batch adds 0 instead; torch.where sends no gradient to the NaN branch.
            own = torch.where(c.micro[kind] > 0, own, torch.zeros_like(own))
        return own * c.micro[kind] / self._scale(kind, c.micro, c.training)

    def _pred_term(self, c: _TermInputs) -> torch.Tensor | None:
        s_out, t_out, inputs, micro, training = c.s_out, c.t_out, c.inputs, c.micro, c.training
        if self._teacher_has_logits is None:
            self._teacher_has_logits = _logits(t_out) is not None
            if not self._teacher_has_logits:
                logger.warning("the teacher has no prediction head (e.g. a sentence-transformers BertModel): "
                               "distilling on the hidden-state and attention terms only; loss_pred is not computed")
        s_logits, t_logits = _logits(s_out), _logits(t_out)
        if s_logits is None or t_logits is None:
            return None
        args = self.args
        if isinstance(s_logits, tuple):  # question answering: start and end distributions over positions
            mask = inputs.get("attention_mask")
            total = 0
            for s, t in zip(s_logits, t_logits, strict=True):
                if mask is not None:
                    neg = torch.finfo(torch.float32).min / 4
                    s, t = s.float().masked_fill(mask == 0, neg), t.float().masked_fill(mask == 0, neg)
                total = total + kd_logits_loss(s, t, args.temperature, reduction="sum")
            return total / 2 / self._scale("examples", micro, training)
        if s_logits.dim() == 3:  # token level (MLM, causal LM, token classification)
            labels = inputs.get("labels")
            if args.pred_loss_positions == "masked" and labels is not None:
                positions, kind = (labels != -100), "labelled"
            else:
                positions, kind = inputs.get("attention_mask"), "tokens"
            if self._causal_lm:
                # Both models see the same inputs, so position t of each predicts token t + 1: compare them as is.
                total = kd_logits_loss_chunked(s_logits, t_logits, args.temperature, positions, "sum",
                                               kind=args.kd_loss, beta=args.jsd_beta, chunk_size=args.kd_chunk_size)
            else:
                total = kd_logits_loss(s_logits, t_logits, args.temperature, positions, "sum")
            return total / self._scale(kind, micro, training)
        if s_logits.shape[-1] == 1:  # regression head
            return kd_regression_loss(s_logits, t_logits, reduction="sum") / self._scale("examples", micro, training)
        return kd_logits_loss(s_logits, t_logits, args.temperature, reduction="sum") / self._scale(
            "examples", micro, training)

    def _hidden_term(self, c: _TermInputs) -> torch.Tensor:
        mask, micro, training = c.inputs.get("attention_mask"), c.micro, c.training
        s_states, t_states = c.s_out.hidden_states, c.t_out.hidden_states
        pairs = [(0, 0)] + [(i + 1, t + 1) for i, t in enumerate(self.layer_map)]
        s_idx, t_idx = self._hidden_index(s_states[0].device)
        total = 0
        for si, ti in pairs:
            s, t = s_states[si], t_states[ti]
            if s_idx is not None:
                s = s.index_select(-1, s_idx)
            if t_idx is not None:
                t = t.index_select(-1, t_idx)
            if self.projection is not None:
                s = self.projection(s)
            total = total + hidden_state_loss(s, t, self.args.hidden_loss, mask, reduction="sum")
        return total / len(pairs) / self._scale("tokens", micro, training)

    def _attn_term(self, c: _TermInputs) -> torch.Tensor:
        s_out, t_out, mask, micro, training = c.s_out, c.t_out, c.inputs.get("attention_mask"), c.micro, c.training
        total = 0
        for si, ti in enumerate(self.layer_map):
            s, t = s_out.attentions[si], t_out.attentions[ti]
            s_heads, t_heads = self._head_index(si, s.device)
            if s_heads is not None:
                s = s.index_select(1, s_heads)
            if t_heads is not None:
                t = t.index_select(1, t_heads)
            total = total + attention_loss(s, t, self.args.attn_loss, mask, reduction="sum")
        return total / len(self.layer_map) / self._scale("tokens", micro, training)

    def _hidden_index(self, device):
        if self.correspondence is None:
            return None, None
        return tuple(None if x is None else self._on(device, x) for x in self.correspondence.hidden_index())

    def _head_index(self, layer: int, device):
        if self.correspondence is None:
            return None, None
        return tuple(None if x is None else self._on(device, x) for x in self.correspondence.head_index(layer))

    def _on(self, device, index: torch.Tensor) -> torch.Tensor:
        # Index tensors change only at pruning steps; keep one device copy of each.
        cache = self.__dict__.setdefault("_index_cache", {})
        key = (id(index), device)
        if key not in cache or cache[key][0] is not index:
            cache[key] = (index, index.to(device))
        return cache[key][1]

    # --- logging ----------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metrics["train"]:
            logs.update(self._flush("train", max(self.state.global_step - self._terms_last_step, 1)))
            self._terms_last_step = self.state.global_step
        if "loss" in logs and self.pruner is not None:
            logs.update(self.pruner.log_values())
        super().log(logs, start_time)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        """The Trainer's evaluation loop, plus each distillation term averaged over the evaluation batches
        (`eval_loss_hidden`, ...): the teacher-student discrepancy on held-out data. Added to the loop's metrics, so
        they are logged in the same entry as `eval_loss` and reach `on_evaluate` callbacks."""
        self._flush("eval", 1)  # nothing left over from an interrupted evaluation
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self._metric_counts["eval"]:
            output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in
                                   self._flush("eval", self._metric_counts["eval"]).items()})
        self._flush("eval", 1)
        return output

    def _flush(self, mode: str, count: int) -> dict[str, float]:
        """The stored per-term metrics of `mode` averaged over `count` (steps or batches, gathered over ranks), and
        the store emptied."""
        out = {name: nested_gather(value, self.args.parallel_mode).mean().item() / count
               for name, value in self._metrics[mode].items()}
        self._metrics[mode], self._metric_counts[mode] = {}, 0
        return out

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The Trainer computes an evaluation loss only for batches with labels (or models whose forward takes
        `return_loss`). Distilling a head-less model (e.g. a sentence-transformers `BertModel`) on raw text has
        neither, so evaluation would run the student and report no `eval_loss`: here the loss is the distillation
        loss itself, so compute it. Every other case is the Trainer's own prediction step."""
        if self.label_names or self.can_return_loss:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # --- checkpoints, resume, export --------------------------------------------------------------------------------
    def _check_finite_weights(self, what: str) -> None:
        """An update that overflowed leaves NaN / inf weights even when its step's loss was finite: refuse to save
        them (the previous checkpoint stays the last one). Sharded (FSDP2) weights: each rank checks its shard and
        one all-reduce tells every rank (so all of them refuse alike)."""
        model = self.accelerator.unwrap_model(self.model)
        named = list(model.named_parameters())
        bad = torch.tensor([float(not torch.isfinite(local(p)[0]).all()) for _, p in named])
        if any_sharded(model):
            all_reduce_sum([bad])
        first = int(bad.nonzero()[0]) if bad.any() else None
        if first is not None:
            raise NonFiniteLossError(f"the weights became non-finite at step {self.state.global_step} "
                                     f"({named[first][0]}); the {what} was not written; lower --learning_rate (or "
                                     "set --max_grad_norm), then resume from the last checkpoint")

    def _save_checkpoint(self, model, trial):
        self._check_finite_weights("checkpoint")
        self._saving_checkpoint = True
        config = self.accelerator.unwrap_model(self.model).config
        cls = type(config)
        if self.pruner is not None and not self.pruner.done:
            # Mid-pruning widths need not pass the family's config validation (e.g. Llama's hidden % heads == 0,
            # which only the target must meet): the checkpoint is for resuming, where the student is rebuilt from
            # the teacher and the pruning state. Skip the validation for this save only.
            config.__class__ = type(cls.__name__, (cls,), {"validate": lambda self: None})
        try:
            super()._save_checkpoint(model, trial)
        finally:
            config.__class__ = cls
            self._saving_checkpoint = False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints: the student as it trains, plus the pruning state. Otherwise: the compact, stock model."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self._saving_checkpoint:  # (checkpoints are checked in _save_checkpoint)
            self._check_finite_weights("model")
        if self._saving_checkpoint or self.correspondence is None:
            super().save_model(output_dir, _internal_call)
            if self._saving_checkpoint and self.pruner is not None and self.args.should_save:
                self.pruner.save(output_dir)
            return
        if self.args.should_save or any_sharded(self.accelerator.unwrap_model(self.model)):
            self.export(output_dir)

    def export(self, output_dir: str | os.PathLike) -> nn.Module | None:
        """Write the compact student (stock config, safetensors, tokenizer, model card) to `output_dir`.

        A sharded (FSDP2) student is gathered first: every rank must call this (the gathers are collective), and only
        the process that saves (`should_save`, rank 0) writes; the others return None."""
        model = self.accelerator.unwrap_model(self.model)
        if self.pruner is not None:
            if not self.pruner.done:
                # An export is the target shape or nothing: a half-pruned model would pass for the real thing.
                raise UserError(f"the student was not exported: training stopped at step {self.state.global_step} "
                                f"before pruning reached the targets (it has {self.pruner.state.shape}, the target "
                                f"is {self.pruner.target}); lower --prune_end or raise --max_steps / "
                                "--num_train_epochs, then train again (or resume from a checkpoint)")
            state, physical = self.pruner.state, self.pruner.physical
        else:
            state, physical = self.correspondence.state, True
        if any_sharded(model):
            # Collective: every rank takes part in the gathers; only the process that writes keeps the full copy.
            model = full_copy(model, keep=self.args.should_save)
            if model is None:
                return None
        return export_model(model, output_dir, state, physical, tokenizer=self.processing_class,
                            info=self._export_info())

    def _export_info(self) -> dict[str, Any]:
        a = self.args
        teacher = self.accelerator.unwrap_model(self.teacher)
        return {
            "teacher": a.teacher_name_or_path or getattr(teacher.config, "_name_or_path", None),
            "teacher_shape": self.teacher_shape.as_dict(),
            "teacher_params": count_backbone_params(teacher.config),
            "target": self.target.as_dict() if self.target else None,
            "model_name": Path(a.output_dir).name,
            "repo_id": a.hub_model_id,
            "recipe": {
                "steps": self.state.global_step, "learning_rate": a.learning_rate,
                "batch_size": a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size,
                **self._recipe_terms(),
                "importance": a.importance, "schedule": a.pruning_schedule,
                "prune_start": a.prune_start, "prune_end": a.prune_end, "prune_every": a.prune_every,
            },
        }

    def _recipe_terms(self) -> dict[str, Any]:
        """Each loss term's weight and, for the terms in use, the flags that describe it (losses.TERMS)."""
        a, out = self.args, {}
        for term in TERMS:
            out[term.alpha] = getattr(a, term.alpha)
            if out[term.alpha] > 0:
                for flag in term.recipe:
                    if flag in ("kd_loss", "jsd_beta") and not self._causal_lm:
                        continue  # the chunked divergences are the decoder path's
                    out[flag] = getattr(a, flag)
        return out

    def create_model_card(self, *args, **kwargs) -> None:
        """`push_to_hub` writes the model card: keep ours (written at export) when there is one."""
        if self.correspondence is not None and (Path(self.args.output_dir) / "homodistil.json").is_file():
            return
        super().create_model_card(*args, **kwargs)

    def push_to_hub(self, *args, **kwargs):
        """Export the compact model to `output_dir`, then upload it (Trainer.push_to_hub saves checkpoints only)."""
        if self.correspondence is not None and (
                self.args.should_save or any_sharded(self.accelerator.unwrap_model(self.model))):
            self.export(self.args.output_dir)
        self._saving_checkpoint = True  # the Trainer's own save inside push_to_hub must not overwrite the export
        try:
            if self.correspondence is not None:
                return self._push_exported(*args, **kwargs)
            return super().push_to_hub(*args, **kwargs)
        finally:
            self._saving_checkpoint = False

    def _push_exported(self, commit_message: str = "End of training", blocking: bool = True,
                       token: str | None = None, revision: str | None = None, private: bool | None = None, **_):
        from huggingface_hub import HfApi

        if not self.is_world_process_zero():
            return None
        repo_id = self.args.hub_model_id or Path(self.args.output_dir).name
        api = HfApi(token=token or self.args.hub_token)
        repo_id = api.create_repo(repo_id, private=private if private is not None else self.args.hub_private_repo,
                                  exist_ok=True).repo_id
        return api.upload_folder(repo_id=repo_id, folder_path=self.args.output_dir, commit_message=commit_message,
                                 revision=revision or self.args.hub_revision, run_as_future=not blocking,
                                 ignore_patterns=["_*", f"{PREFIX_CHECKPOINT_DIR}-*", ".homodistil-*"])

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The Trainer's save, with the training arguments as JSON instead of a pickle (`training_args.bin`)."""
        super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        pickled = Path(output_dir) / "training_args.bin"
        if self.args.should_save and pickled.is_file():
            pickled.unlink()
            (Path(output_dir) / "training_args.json").write_text(self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if self.pruner is not None:
            check_checkpoint(resume_from_checkpoint)
            self.pruner.rebind()  # under FSDP2 this runs after the student was sharded
            self.pruner.load(resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)


@dataclass
class _TermInputs:
    """What every loss term reads: both models' outputs, the batch, the position counts of the micro-batch."""

    s_out: Any
    t_out: Any
    inputs: dict[str, Any]
    micro: dict[str, torch.Tensor]
    training: bool
    use_labels: bool
    causal_labels: bool


def accelerate_fsdp_on_cpu() -> bool:
    """Whether accelerate turns FSDP on for CPU processes. It does not: the FSDP branch of `AcceleratorState`
    runs only for accelerator distributed types, so `--fsdp` with `--use_cpu` would quietly be DDP, and it is
    refused. (The FSDP2 Trainer test patches accelerate inside its worker processes to take that branch on CPU, and
    this function with it; nothing else does.)"""
    return False


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


def sharded_importances() -> list[str]:
    """The `--importance` metrics that work from sharded (FSDP2) parameters: per-structure sums reduced across
    ranks, activations (every rank computes full activations), random. Per-weight metrics (`sensitivity`,
    `magnitude`) would need full weights and gradients on every rank."""
    from .pruning.importance import ActivationImportance, RandomImportance, StructureSensitivityImportance

    return [name for name, cls in IMPORTANCES.items()
            if issubclass(cls, StructureSensitivityImportance | ActivationImportance | RandomImportance)]


def _check_sharded_pruning(args: HomoDistilConfig, fsdp_version: int, physical: bool | None = None) -> None:
    """Pruning under FSDP: FSDP2 only, in masks mode, with an importance metric that works from shards."""
    if int(fsdp_version) != 2:
        raise UserError(f"pruning under FSDP needs FSDP2, got FSDP version {fsdp_version}; set \"version\": 2 in "
                        "--fsdp_config (2 is the default)")
    if args.pruning_mode == "physical" or physical:
        raise UserError("--pruning_mode physical cannot run under FSDP (sharded weights cannot be re-shaped); use "
                        "--pruning_mode masks or auto")
    if args.importance not in sharded_importances():
        raise UserError(f"--importance {args.importance} keeps per-weight statistics, which sharded (FSDP) "
                        "parameters do not hold whole on any rank; use --importance taylor_structure (one number "
                        "per structure, as good as the per-weight metric on the benchmark), or one of "
                        f"{', '.join(sharded_importances())}")


def _keep_output_capture(model: nn.Module) -> None:
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


def _disable_attention_dropout(model: nn.Module) -> None:
    """Attention maps after dropout are not distributions (zeros and 1/(1-p) rescaling), so a KL against the teacher's
    is infinite. The student's attention-probability dropout is switched off in its modules while attention maps are
    distilled; the config keeps its value, so fine-tuning the exported model uses it as usual."""
    adapter = get_adapter(model)
    changed = [adapter.disable_attention_dropout(parts) for parts in adapter.layers(model)]
    if any(changed):
        logger.info("attention-probability dropout is off in the student while attention maps are distilled")


def is_causal_lm(model: nn.Module) -> bool:
    """Whether `model` is a causal language model of a decoder family (`LlamaForCausalLM`, `GPT2LMHeadModel`, ...),
    as opposed to an encoder or a decoder under a task head (sequence classification, ...)."""
    name = type(model).__name__
    return get_adapter(model).causal_lm and name.endswith(("ForCausalLM", "LMHeadModel"))


def _logits(output) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
    """The prediction logits of a model output: `logits`, (start, end) for QA, or None for a bare backbone."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    start, end = getattr(output, "start_logits", None), getattr(output, "end_logits", None)
    if start is not None and end is not None:
        return start, end
    return None
