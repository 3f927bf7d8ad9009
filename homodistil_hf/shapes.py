"""Model shapes: the four widths that pruning changes, their validation against a stock config, and the search for a
shape with a given parameter count.

A stock BERT-family config has no `head_dim`: the attention width equals `hidden_size` and the head size is
`hidden_size / num_attention_heads`. Pruning only removes structures, so a valid target also has every width no
larger than the teacher's, the head size included.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from transformers import AutoModel

from .arch import get_adapter
from .config import HomoDistilConfig, parse_param_count
from .errors import UserError


@dataclass(frozen=True)
class Shape:
    """The prunable widths of a model: uniform across layers."""

    hidden: int
    heads: int
    head_dim: int
    intermediate: int

    @classmethod
    def of_config(cls, config) -> Shape:
        """The shape of a stock config."""
        return cls(
            hidden=config.hidden_size,
            heads=config.num_attention_heads,
            head_dim=get_adapter(config).head_dim(config),
            intermediate=config.intermediate_size,
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __str__(self) -> str:
        return f"hidden {self.hidden}, {self.heads} heads x {self.head_dim}, FFN {self.intermediate}"


def valid_head_counts(teacher: Shape, hidden: int) -> list[int]:
    """Head counts a stock config can pair with `hidden`: they divide it, are at most the teacher's, and give a head
    size no larger than the teacher's (head dims can only be pruned)."""
    return [h for h in range(1, teacher.heads + 1) if hidden % h == 0 and hidden // h <= teacher.head_dim]


def check_target(teacher_config, hidden: int, heads: int, intermediate: int) -> Shape:
    """Validate a target shape against the teacher's config; a `UserError` naming valid choices otherwise."""
    adapter = get_adapter(teacher_config)
    teacher = Shape.of_config(teacher_config)
    for flag, value, limit in (
        ("--target_hidden_size", hidden, teacher.hidden),
        ("--target_num_attention_heads", heads, teacher.heads),
        ("--target_intermediate_size", intermediate, teacher.intermediate),
    ):
        if value > limit:
            raise UserError(f"{flag} {value} is larger than the teacher's {limit}: pruning only shrinks; use a value "
                            f"in 1..{limit}")
        if value < 1:
            raise UserError(f"{flag} must be >= 1 (got {value})")
    if hidden % heads != 0 or hidden // heads > teacher.head_dim:
        valid = valid_head_counts(teacher, hidden)
        why = (f"does not divide --target_hidden_size {hidden}" if hidden % heads else
               f"gives head size {hidden // heads}, larger than the teacher's {teacher.head_dim}")
        hint = (f"valid head counts for hidden {hidden}: {', '.join(map(str, valid))}" if valid else
                f"no head count works for hidden {hidden}; use a hidden size that is a multiple of a head size "
                f"<= {teacher.head_dim}, e.g. {max(teacher.head_dim, hidden - hidden % teacher.head_dim)}")
        raise UserError(f"--target_num_attention_heads {heads} {why} (a stock {teacher_config.model_type} config "
                        f"has attention width = hidden size); {hint}")
    if (msg := adapter.shape_constraints(teacher_config, hidden, heads)) is not None:
        raise UserError(f"--target_hidden_size {hidden}: {msg}")
    return Shape(hidden, heads, hidden // heads, intermediate)


def config_for_shape(config, shape: Shape):
    """A copy of `config` with the shape written in (the stock fields only)."""
    config = copy.deepcopy(config)
    get_adapter(config).write_config(config, shape.hidden, shape.heads, shape.intermediate)
    return config


def count_backbone_params(config) -> int:
    """Exact parameter count of the backbone (`AutoModel`: embeddings, encoder, pooler) for `config`, built on the
    meta device so that nothing is allocated."""
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return sum(p.numel() for p in model.parameters())


def shape_for_params(teacher_config, target: int) -> Shape:
    """The valid shape whose backbone parameter count is closest to `target`.

    Our choice (the paper gives its shapes only as parameter counts): shrink every width by one factor. Hidden sizes
    step by 16 (hardware-friendly, fine enough to tell the paper's 17.3M / 15.6M / 14.1M apart), the FFN keeps the
    teacher's FFN / hidden ratio, and the head count is the smallest valid one, so the head size stays as close to
    the teacher's as the stock config allows. Raises if the teacher is below `target`.
    """
    teacher = Shape.of_config(teacher_config)
    adapter = get_adapter(teacher_config)
    full = count_backbone_params(teacher_config)
    if target > full:
        raise UserError(f"--target_params {target:,} is more than the teacher's {full:,} backbone parameters")
    best: tuple[int, Shape] | None = None
    for hidden in [*range(16, teacher.hidden, 16), teacher.hidden]:
        heads_options = valid_head_counts(teacher, hidden)
        if not heads_options or adapter.shape_constraints(teacher_config, hidden, heads_options[0]):
            continue
        heads = heads_options[0]
        ffn = max(1, round(teacher.intermediate * hidden / teacher.hidden))
        shape = Shape(hidden, heads, hidden // heads, ffn)
        gap = abs(count_backbone_params(config_for_shape(teacher_config, shape)) - target)
        if best is None or gap < best[0]:
            best = (gap, shape)
    if best is None:
        raise UserError(f"--target_params {target:,}: no valid shape found for this teacher; set the widths instead")
    return best[1]


def resolve_target(teacher_config, args: HomoDistilConfig) -> Shape | None:
    """The validated target shape of a run (None when no target is set)."""
    if not args.has_targets:
        return None
    if args.target_params is not None:
        return shape_for_params(teacher_config, parse_param_count(args.target_params))
    teacher = Shape.of_config(teacher_config)
    hidden = args.target_hidden_size or teacher.hidden
    heads = args.target_num_attention_heads or teacher.heads
    intermediate = args.target_intermediate_size or teacher.intermediate
    if args.target_num_attention_heads is None and args.target_hidden_size is not None:
        # Hidden alone: keep the teacher's head size if it divides, else the fewest heads that fit.
        valid = valid_head_counts(teacher, hidden)
        heads = hidden // teacher.head_dim if hidden % teacher.head_dim == 0 else (valid[0] if valid else heads)
    return check_target(teacher_config, hidden, heads, intermediate)
