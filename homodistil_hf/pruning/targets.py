"""Targets: a requested shape validated against the teacher's stock config before training, and the search for a
shape with a given parameter count.

Pruning only removes structures, so every width of a valid target is at most the teacher's. Beyond that, the target
must be expressible by the family's stock config (the adapter's flags):
- `attention_width_is_hidden` (BERT, RoBERTa, ELECTRA, GPT-2: no `head_dim` field): heads x head size = hidden;
- `prunes_head_dim` False (rotary embeddings: Llama, Mistral, Qwen): the head size stays the teacher's;
- grouped-query attention: query heads a multiple of key/value heads, at most the teacher's per group;
- `hidden_per_head` (the config validates it): hidden % heads == 0.
A target that breaks a rule is refused with one line that names the valid choices.
"""

from __future__ import annotations

import copy
import logging

import torch
from transformers import AutoModel

from ..arch import Shape, get_adapter, shape_of
from ..config import HomoDistilConfig, parse_param_count
from ..errors import UserError

logger = logging.getLogger(__name__)
# A --target_params that keeps less than this share of the teacher's backbone parameters is warned about (a typo
# such as `1` for `1B` would otherwise export a model of a few thousand parameters without a word).
SMALL_TARGET_SHARE = 0.05


def valid_head_counts(teacher: Shape, hidden: int, adapter=None) -> list[int]:
    """Query-head counts a stock config can pair with `hidden`: at most the teacher's, and (for families whose
    attention width is the hidden size) dividing it with a head size no larger than the teacher's; for families that
    validate hidden % heads, dividing it; under grouped-query attention, a multiple of some key/value count."""
    out = []
    for h in range(1, teacher.heads + 1):
        if adapter is not None and not adapter.attention_width_is_hidden:
            if adapter.hidden_per_head and hidden % h:
                continue
            if teacher.kv_heads != teacher.heads and not _kv_options(teacher, h):
                continue
        elif hidden % h != 0 or hidden // h > teacher.head_dim:
            continue
        out.append(h)
    return out


def _kv_options(teacher: Shape, heads: int) -> list[int]:
    """Key/value head counts for `heads` query heads: uniform groups, each no larger than the teacher's."""
    return [g for g in range(1, teacher.kv_heads + 1) if heads % g == 0 and heads // g <= teacher.group_size]


def _check_range(flag: str, value: int, limit: int) -> None:
    if value > limit:
        raise UserError(f"{flag} {value} is larger than the teacher's {limit}: pruning only shrinks; use a value "
                        f"in 1..{limit}")
    if value < 1:
        raise UserError(f"{flag} must be >= 1 (got {value})")


def check_target(teacher_config, hidden: int, heads: int, intermediate: int, kv_heads: int | None = None,
                 head_dim: int | None = None, hints: bool = True) -> Shape:
    """Validate a target shape against the teacher's config; a `UserError` naming valid choices otherwise.

    Every value a refusal suggests is one this function accepts with the other flags as given (each candidate is
    checked; `hints=False` skips that search, for those checks)."""
    adapter = get_adapter(teacher_config)
    teacher = shape_of(teacher_config)
    family = teacher_config.model_type
    given = dict(hidden=hidden, heads=heads, intermediate=intermediate, kv_heads=kv_heads, head_dim=head_dim)

    def working(flag: str, values) -> list[int]:
        """The values of `flag` (in order) that make the target valid, the other flags as given."""
        if not hints:
            return []
        out = []
        for value in values:
            try:
                check_target(teacher_config, **{**given, flag: value}, hints=False)
            except UserError:
                continue
            out.append(value)
        return out

    def listed(values: list[int]) -> str:
        return ", ".join(map(str, values))

    for flag, value, limit in (
        ("--target_hidden_size", hidden, teacher.hidden),
        ("--target_num_attention_heads", heads, teacher.heads),
        ("--target_intermediate_size", intermediate, teacher.intermediate),
    ):
        _check_range(flag, value, limit)

    if adapter.attention_width_is_hidden:
        if kv_heads is not None and kv_heads != heads:
            raise UserError(f"--target_num_key_value_heads {kv_heads}: {family} has no grouped-query attention; "
                            "drop the flag")
        if head_dim is not None and head_dim * heads != hidden:
            raise UserError(f"--target_head_dim {head_dim}: a stock {family} config has head size = hidden / heads "
                            f"({hidden} / {heads}); drop the flag")
        if hidden % heads != 0 or hidden // heads > teacher.head_dim:
            valid = working("heads", range(1, teacher.heads + 1))
            why = (f"does not divide --target_hidden_size {hidden}" if hidden % heads else
                   f"gives head size {hidden // heads}, larger than the teacher's {teacher.head_dim}")
            near = working("hidden", _near_multiples(hidden, heads, min(teacher.hidden, heads * teacher.head_dim)))
            hint = (f"valid head counts for hidden {hidden}: {listed(valid)}" if valid else
                    f"no head count works for hidden {hidden}")
            if near:
                hint += f"; with {heads} heads use hidden {' or '.join(map(str, near))}"
            raise UserError(f"--target_num_attention_heads {heads} {why} (a stock {family} config has attention "
                            f"width = hidden size); {hint}")
        target = Shape(hidden, heads, hidden // heads, intermediate)
    else:
        head_dim = teacher.head_dim if head_dim is None else head_dim
        if head_dim != teacher.head_dim and not adapter.prunes_head_dim:
            raise UserError(f"--target_head_dim {head_dim}: {family} uses rotary position embeddings, which pair "
                            f"head dims, so the head size stays the teacher's {teacher.head_dim}; prune heads "
                            "instead (--target_num_attention_heads / --target_num_key_value_heads)")
        _check_range("--target_head_dim", head_dim, teacher.head_dim)
        chosen = kv_heads
        if chosen is None:  # the teacher's group size if it fits, else the fewest groups that do
            options = _kv_options(teacher, heads)
            chosen = next((g for g in options if heads // g == teacher.group_size), options[0] if options else 0)
        if chosen == 0 or heads % chosen or heads // chosen > teacher.group_size or chosen > teacher.kv_heads:
            _check_range("--target_num_key_value_heads", chosen, teacher.kv_heads)
            valid = working("kv_heads", range(1, teacher.kv_heads + 1))
            heads_ok = working("heads", range(1, teacher.heads + 1))
            with_kv = f" with --target_num_key_value_heads {kv_heads}" if kv_heads is not None else ""
            hint = (f"valid key/value head counts for {heads} heads: {listed(valid)}" if valid else
                    f"no key/value head count works for {heads} heads")
            hint += (f"; valid head counts{with_kv}: {listed(heads_ok)}" if heads_ok else "")
            raise UserError(f"--target_num_key_value_heads {chosen} with --target_num_attention_heads {heads}: "
                            f"query heads per key/value group must be uniform and at most the teacher's "
                            f"{teacher.group_size} ({teacher.heads} heads / {teacher.kv_heads} key/value); {hint}")
        if adapter.hidden_per_head and hidden % heads:
            valid = working("heads", range(1, teacher.heads + 1))
            near = working("hidden", _near_multiples(hidden, heads, teacher.hidden))
            raise UserError(f"--target_hidden_size {hidden} is not a multiple of --target_num_attention_heads {heads}, "
                            f"which {family}'s config validation requires (even with head_dim set); use hidden "
                            f"{' or '.join(map(str, near)) or '(none fits)'}, or heads in {listed(valid) or 'none'}")
        target = Shape(hidden, heads, head_dim, intermediate, chosen)
    if (msg := adapter.check_shape(teacher_config, teacher, target)) is not None:
        raise UserError(f"--target_hidden_size {hidden}: {msg}")
    return target


def _near_multiples(hidden: int, heads: int, limit: int) -> list[int]:
    """The multiples of `heads` just below and above `hidden`, in 1..limit."""
    below = hidden - hidden % heads
    return [h for h in sorted({below, below + heads}) if 0 < h <= limit]


def config_for_shape(config, shape: Shape):
    """A copy of `config` with the shape written in (the stock fields only)."""
    config = copy.deepcopy(config)
    get_adapter(config).write_config(config, shape)
    return config


def count_backbone_params(config) -> int:
    """Exact parameter count of the backbone (`AutoModel`: embeddings, layers, pooler / final norm) for `config`,
    built on the meta device so that nothing is allocated."""
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return sum(p.numel() for p in model.parameters())


def shape_for_params(teacher_config, target: int, layers: int | None = None) -> Shape:
    """The valid shape whose backbone parameter count is closest to `target`, at `layers` layers (default: the
    teacher's depth).

    Our choice (the paper gives its shapes only as parameter counts): shrink every width by one factor. Hidden sizes
    step by 16 (hardware-friendly, fine enough to tell the paper's 17.3M / 15.6M / 14.1M apart), the FFN keeps the
    teacher's FFN / hidden ratio, and the head count is the smallest valid one for families without `head_dim` (so
    the head size stays as close to the teacher's as the stock config allows), or the teacher's head count scaled by
    the same factor for families with one. Depth is never traded for width here: with `--target_num_hidden_layers`
    the widths are searched at that depth (which of the two keeps more quality at one parameter count is measured
    in the README, not assumed). Raises if the teacher is below `target`.
    """
    teacher = shape_of(teacher_config)
    adapter = get_adapter(teacher_config)
    full = count_backbone_params(teacher_config)
    if layers is not None and layers < teacher_config.num_hidden_layers:
        teacher_config = copy.deepcopy(teacher_config)
        adapter.set_depth(teacher_config, list(range(layers)))
    if target > full:
        raise UserError(f"--target_params {target:,} is more than the teacher's {full:,} backbone parameters")
    best: tuple[int, Shape] | None = None
    for hidden in [*range(16, teacher.hidden, 16), teacher.hidden]:
        ffn = max(1, round(teacher.intermediate * hidden / teacher.hidden))
        heads_options = valid_head_counts(teacher, hidden, adapter)
        if not adapter.attention_width_is_hidden:  # keep the heads' share of the width
            want = teacher.heads * hidden / teacher.hidden
            heads_options = sorted(heads_options, key=lambda h: (abs(h - want), h))
        for heads in heads_options[:1]:
            try:
                shape = check_target(teacher_config, hidden, heads, ffn)
            except UserError:
                continue
            gap = abs(count_backbone_params(config_for_shape(teacher_config, shape)) - target)
            if best is None or gap < best[0]:
                best = (gap, shape)
    if best is None:
        raise UserError(f"--target_params {target:,}: no valid shape found for this teacher; set the widths instead")
    return best[1]


def check_depth_target(teacher_config, layers: int | None) -> None:
    """`--target_num_hidden_layers` within 1..the teacher's depth, for a family that can lose layers."""
    if layers is None:
        return
    _check_range("--target_num_hidden_layers", layers, teacher_config.num_hidden_layers)
    if layers < teacher_config.num_hidden_layers and (why := get_adapter(teacher_config).check_depth(teacher_config)):
        raise UserError(f"--target_num_hidden_layers {layers}: {why}; drop the flag")


def resolve_target(teacher_config, args: HomoDistilConfig) -> Shape | None:
    """The validated target shape (widths) of a run (None when no target is set); a depth target
    (`--target_num_hidden_layers`) is checked here too (the widths stay the teacher's when only depth is set)."""
    if not args.has_targets:
        return None
    check_depth_target(teacher_config, getattr(args, "target_num_hidden_layers", None))
    if args.target_params is not None:
        layers = getattr(args, "target_num_hidden_layers", None)
        shape = shape_for_params(teacher_config, parse_param_count(args.target_params), layers)
        student = config_for_shape(teacher_config, shape)
        if layers is not None:
            get_adapter(student).set_depth(student, list(range(layers)))
        kept, full = count_backbone_params(student), count_backbone_params(teacher_config)
        if kept < SMALL_TARGET_SHARE * full:
            logger.warning("--target_params %s keeps %s of the teacher's %s backbone parameters (%.1f%%, under %d%%): "
                           "the student will be %s; check the value", args.target_params, f"{kept:,}", f"{full:,}",
                           100 * kept / full, round(100 * SMALL_TARGET_SHARE), shape)
        return shape
    adapter = get_adapter(teacher_config)
    teacher = shape_of(teacher_config)
    hidden = args.target_hidden_size or teacher.hidden
    heads = args.target_num_attention_heads or teacher.heads
    intermediate = args.target_intermediate_size or teacher.intermediate
    kv_heads = getattr(args, "target_num_key_value_heads", None)
    head_dim = getattr(args, "target_head_dim", None)
    if args.target_num_attention_heads is None:
        if kv_heads is not None:  # key/value heads alone: keep the teacher's group size
            heads = kv_heads * teacher.group_size
        elif args.target_hidden_size is not None and adapter.attention_width_is_hidden:
            # Hidden alone: keep the teacher's head size if it divides, else the fewest heads that fit.
            valid = valid_head_counts(teacher, hidden, adapter)
            heads = hidden // teacher.head_dim if hidden % teacher.head_dim == 0 else (valid[0] if valid else heads)
    return check_target(teacher_config, hidden, heads, intermediate, kv_heads, head_dim)
