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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, Trainer
from transformers.trainer_pt_utils import nested_gather

from .arch import Shape, disable_attention_dropout, get_adapter, is_causal_lm, shape_of
from .checkpointing import CheckpointExportMixin, NonFiniteLossError
from .compaction import CompactionMixin
from .config import LOSS_WEIGHTS, HomoDistilConfig
from .data import kd_positions
from .distributed import check_accelerate_state, check_distributed_support, keep_output_capture, physical_pruning
from .errors import UserError
from .linear_losses import final_hidden_and_head, head_is_plain, linear_logit_losses
from .loading import load_teacher, needs_projection
from .losses import (
    attention_loss,
    causal_lm_loss,
    hidden_state_loss,
    kd_logits_loss,
    kd_logits_loss_chunked,
    kd_regression_loss,
    parse_layer_map,
    position_counts,
    prediction_logits,
)
from .pruning.callback import PruningCallback
from .pruning.pruner import Pruner
from .pruning.state import PruningState, StaticCorrespondence
from .pruning.targets import resolve_target
from .registry import importance_class

logger = logging.getLogger(__name__)


class HomoDistilTrainer(CompactionMixin, CheckpointExportMixin, Trainer):
    """Distil (and prune) a student from a teacher inside the Hugging Face Trainer.

    Args:
        model: the student. `None` starts from an exact copy of the teacher (the homotopic start).
        teacher: a model, or a Hub id / local folder (default: `args.teacher_name_or_path`).
        args: a `HomoDistilConfig`.
        student_state: for a student cut from the teacher outside this trainer, which teacher structures it holds
            (e.g. from `loading.make_student(..., init="truncate")`), so losses pair kept channels and heads.
        target: the validated target shape, when the caller resolved it already (`run_distill` does); default:
            resolved here from `args` (`pruning.targets.resolve_target`).
        **kwargs: everything `transformers.Trainer` takes (`train_dataset`, `data_collator`, `processing_class`, ...).
    """

    # Each term is normalised by counts over the whole accumulation window (see module docstring).
    loss_is_scaled_for_ga = True

    def __init__(self, model: PreTrainedModel | None = None, teacher: PreTrainedModel | str | None = None,
                 args: HomoDistilConfig | None = None, student_state: PruningState | None = None,
                 target: Shape | None = None, **kwargs):
        if args is None:
            raise UserError("HomoDistilTrainer needs args=HomoDistilConfig(...)")
        if not isinstance(args, HomoDistilConfig):
            raise UserError(f"args must be a HomoDistilConfig, got {type(args).__name__}")
        teacher = teacher if teacher is not None else args.teacher_name_or_path
        if teacher is None:
            raise UserError("no teacher: pass teacher= or set --teacher_name_or_path")
        if isinstance(teacher, str | os.PathLike):
            teacher = load_teacher(str(teacher), gguf_file=args.teacher_gguf_file)
        # Resolved once here and handed down: the teacher's family, shape and the target.
        self.teacher_adapter = teacher_adapter = get_adapter(teacher)
        # Settings left on "auto" (alpha_attn, prune_end) depend on the teacher's family.
        args.resolve_for_teacher(teacher_adapter.causal_lm)
        if model is None:
            # fp32 master weights by default, whatever the teacher is stored in (--student_dtype)
            model = copy.deepcopy(teacher).to(getattr(torch, args.student_dtype)).train().requires_grad_(True)
        check_distributed_support(args)

        # Eager attention only when attention maps are distilled: it is slower and uses more memory.
        attn_impl = "eager" if args.alpha_attn > 0 else "sdpa"
        for m in (teacher, model):
            m.set_attn_implementation(attn_impl)
        if args.alpha_attn > 0 and disable_attention_dropout(model):
            logger.info("attention-probability dropout is off in the student while attention maps are distilled")

        if target is None and args.has_targets:
            target = resolve_target(teacher.config, args)
        self.teacher_shape = teacher_adapter.shape_of(teacher.config)
        self.pruner: Pruner | None = None
        self.correspondence: Pruner | StaticCorrespondence | None = StaticCorrespondence(student_state) if student_state else None
        student_shape = shape_of(model.config)
        depth = args.target_num_hidden_layers
        prunes_depth = depth is not None and depth < teacher.config.num_hidden_layers
        if target is not None and student_state is None and (student_shape != target or prunes_depth):
            if student_shape != self.teacher_shape or model.config.num_hidden_layers != teacher.config.num_hidden_layers:
                raise UserError(f"the student ({student_shape}) is neither the teacher's shape nor the target "
                                f"({target}): pruning starts from a full copy of the teacher")
            self.pruner = Pruner(model, target, importance_class(args.importance).from_config(args),
                                 physical=physical_pruning(args), target_layers=depth, layer_fade=args.layer_fade,
                                 layer_importance=args.layer_importance, layer_beta=args.importance_beta1)
            self.correspondence = self.pruner

        callbacks = list(kwargs.pop("callbacks", None) or [])
        if self.pruner is not None:
            callbacks.append(PruningCallback(self.pruner))
        super().__init__(model=model, args=args, callbacks=callbacks, **kwargs)

        check_accelerate_state(args, self.accelerator, self.model, self.is_fsdp_enabled,
                               None if self.pruner is None else self.pruner.physical)
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
    def _prepare_teacher(self, teacher: PreTrainedModel) -> nn.Module:
        """Frozen, eval mode, on the training device, in `--teacher_dtype` (auto: the training dtype); placed by
        accelerate for evaluation (no DDP wrapper: it never gets gradients). Under FSDP the teacher is not sharded
        either: every rank holds a full, frozen copy (`evaluation_mode` skips the FSDP wrapping)."""
        teacher.eval()
        teacher.requires_grad_(False)
        # auto: the compute precision under --bf16 / --fp16, else the student's (a bf16-stored teacher and an fp32
        # student: fp32, so both models' outputs meet in one precision)
        dtype = torch.bfloat16 if self.args.bf16 else (torch.float16 if self.args.fp16 else None)
        dtype = dtype or next(self.model.parameters()).dtype
        if self.args.teacher_dtype != "auto":
            dtype = getattr(torch, self.args.teacher_dtype)
        if dtype is not None:
            teacher.to(dtype=dtype)
        teacher.to(self.args.device)
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def _setup_maps(self, student: nn.Module, teacher: nn.Module) -> None:
        args = self.args
        s_layers = len(get_adapter(student).layers(student))
        t_layers = len(self.teacher_adapter.layers(teacher))
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
            for key, value in position_counts(batch).items():
                counts[key] = counts.get(key, 0) + value
        self._window = counts or None
        return batch_samples, num_items_in_batch

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
            keep_output_capture(model)
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
        teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        training = model.training
        fused = None
        if self._fused_logits(model, training, return_outputs):
            # Causal LMs in training: both models' final hidden states, no [tokens x vocab] logits (linear_losses).
            s_h, s_w, s_b, s_out = final_hidden_and_head(model, **student_inputs, **flags)
            with torch.no_grad():
                t_h, t_w, t_b, t_out = final_hidden_and_head(self.teacher, **teacher_inputs, **flags)
            fused = self._fused_terms(inputs, causal_labels, s_h, s_w, s_b, t_h, t_w, t_b)
        else:
            s_out = model(**student_inputs, **flags)
            with torch.no_grad():
                t_out = self.teacher(**teacher_inputs, **flags)

        micro = {k: v.to(s_out[0].device) if torch.is_tensor(v) else v for k, v in position_counts(inputs).items()}
        context = _TermInputs(s_out, t_out, inputs, micro, training, use_labels, causal_labels, fused)
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        for term in TERMS:
            weight = getattr(args, term.alpha)
            if weight > 0 and (value := term.compute(self, context)) is not None:
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

    def _fused_logits(self, model, training: bool, return_outputs: bool) -> bool:
        """Whether the causal-LM logit terms come from hidden states (`--logits_from_hidden`): in training, not under
        FSDP (the heads' weights are sharded outside the forward), and with no hooks on either LM head (masks)."""
        if not (self._causal_lm and self.args.logits_from_hidden and training and not return_outputs):
            return False
        if self.is_fsdp_enabled:
            return False
        return head_is_plain(model) and head_is_plain(self.teacher)

    def _fused_terms(self, inputs, causal_labels: bool, s_h, s_w, s_b, t_h, t_w, t_b):
        """(summed next-token CE or None, summed logit divergence or None, the divergence's count kind), computed
        chunk by chunk from the final hidden states and heads: the same sums as `_own_term` / `_pred_term` on
        materialised logits."""
        args, labels = self.args, inputs.get("labels")
        want_ce, want_kd = causal_labels and args.alpha_mlm > 0, args.alpha_pred > 0
        if not (want_ce or want_kd):
            return None
        positions, kind = self._kd_positions(inputs)
        targets = None if labels is None else F.pad(labels, (0, 1), value=-100)[..., 1:].reshape(-1)
        ce, kd = linear_logit_losses(
            s_h.flatten(0, 1), s_w, s_b, t_h.flatten(0, 1), t_w, t_b, targets,
            None if positions is None else positions.reshape(-1).to(s_h.dtype), args.temperature, args.kd_loss,
            args.jsd_beta, args.kd_chunk_size, terms="both" if want_ce and want_kd else ("ce" if want_ce else "kd"))
        return (ce if want_ce else None), (kd if want_kd else None), kind

    def _kd_positions(self, inputs) -> tuple[torch.Tensor | None, str]:
        """The positions the token-level logit term counts, and the name of their count: the loss-masked targets
        (--assistant_only_loss / --completion_only_loss: position t counts when token t + 1 is a target), the
        labelled tokens (--pred_loss_positions masked), or every real token."""
        labels, args = inputs.get("labels"), self.args
        if labels is not None and self._causal_lm and (args.assistant_only_loss or args.completion_only_loss):
            return kd_positions(labels), "next_tokens"
        if args.pred_loss_positions == "masked" and labels is not None:
            return labels != -100, "labelled"
        return inputs.get("attention_mask"), "tokens"

    # --- the terms (see TERMS below): each a summed loss divided by its accumulation-window count -----------------
    def _own_term(self, c: _TermInputs) -> torch.Tensor | None:
        """The student's own loss on the labels: next-token LM (computed here from the logits, chunked, with exact
        counts), or the model's own loss (MLM, task)."""
        labels = c.inputs.get("labels")
        if c.causal_labels and c.fused is not None and c.fused[0] is not None:
            return c.fused[0] / self._scale("next_tokens", c.micro, c.training)
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
            self._teacher_has_logits = prediction_logits(t_out) is not None
            if not self._teacher_has_logits:
                logger.warning("the teacher has no prediction head (e.g. a sentence-transformers BertModel): "
                               "distilling on the hidden-state and attention terms only; loss_pred is not computed")
        if c.fused is not None and c.fused[1] is not None:
            return c.fused[1] / self._scale(c.fused[2], micro, training)
        s_logits, t_logits = prediction_logits(s_out), prediction_logits(t_out)
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
            positions, kind = self._kd_positions(inputs)
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
        pairs = [(0, 0)] + [(i + 1, t + 1) for i, t in self.layer_pairs()]
        if self.teacher_adapter.final_norm_in_hidden_states and self.pruner is not None and self.pruner.fader:
            # Depth pruned: the student's last state is its final norm's output; it pairs with the teacher's.
            pairs[-1] = (len(s_states) - 1, len(t_states) - 1)
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
        total, pairs = 0, self.layer_pairs()
        for si, ti in pairs:
            s, t = s_out.attentions[si], t_out.attentions[ti]
            s_heads, t_heads = self._head_index(si, s.device)
            if s_heads is not None:
                s = s.index_select(1, s_heads)
            if t_heads is not None:
                t = t.index_select(1, t_heads)
            total = total + attention_loss(s, t, self.args.attn_loss, mask, reduction="sum")
        return total / len(pairs) / self._scale("tokens", micro, training)

    def layer_pairs(self) -> list[tuple[int, int]]:
        """(student layer, teacher layer) pairs the hidden and attention terms compare, as of now: under depth
        pruning, each layer the student keeps against the teacher layer it came from (`Pruner.layer_pairs`)."""
        if self.pruner is not None and self.pruner.fader is not None:
            return self.pruner.layer_pairs()
        return list(enumerate(self.layer_map))

    def _hidden_index(self, device):
        if self.correspondence is None:
            return None, None
        return tuple(None if x is None else self._on(device, x) for x in self.correspondence.hidden_index())

    def _head_index(self, layer: int, device):
        if self.correspondence is None:
            return None, None
        return tuple(None if x is None else self._on(device, x) for x in self.correspondence.head_index(layer))

    def _on(self, device, index: torch.Tensor) -> torch.Tensor:  # one device copy of each index tensor
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
    fused: tuple | None = None  # (CE sum, KD sum, KD count kind) from hidden states (`_fused_terms`), or None


@dataclass(frozen=True)
class LossTerm:
    """One term of the distillation objective: its log name, its weight flag, the flags that describe it in the
    recipe (model card), and the method that computes it (a summed term divided by its accumulation-window count,
    or None where it does not apply). A new term is one entry here, its pure function in `losses`, and its method."""

    name: str
    alpha: str
    recipe: tuple[str, ...]
    compute: Callable[[HomoDistilTrainer, _TermInputs], torch.Tensor | None]


TERMS = (
    LossTerm("loss_mlm", "alpha_mlm", (), HomoDistilTrainer._own_term),  # MLM, next-token LM or the task's loss
    LossTerm("loss_pred", "alpha_pred", ("temperature", "pred_loss_positions", "kd_loss", "jsd_beta"),
             HomoDistilTrainer._pred_term),
    LossTerm("loss_hidden", "alpha_hidden", ("hidden_loss", "layer_map"), HomoDistilTrainer._hidden_term),
    LossTerm("loss_attn", "alpha_attn", ("attn_loss",), HomoDistilTrainer._attn_term),
)
assert tuple(t.alpha for t in TERMS) == LOSS_WEIGHTS, "one term per weight flag of HomoDistilConfig"
