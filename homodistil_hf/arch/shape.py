"""`Shape`: the widths pruning changes, uniform across layers (a stock config has one number for each)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Shape:
    """The prunable widths of a model.

    `heads` are query heads; `kv_heads` key/value heads (grouped-query attention: `heads` is a multiple of it; equal
    to `heads` when omitted, as in multi-head attention); `head_dim` the per-head width of queries, keys and values.
    """

    hidden: int
    heads: int
    head_dim: int
    intermediate: int
    kv_heads: int | None = None

    def __post_init__(self):
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)

    @property
    def group_size(self) -> int:
        """Query heads per key/value head."""
        return self.heads // self.kv_heads if self.kv_heads else 0

    def as_dict(self) -> dict[str, int]:
        """The widths by name; `kv_heads` only under grouped-query attention (as multi-head configs lack it)."""
        out = asdict(self)
        if self.kv_heads == self.heads:
            del out["kv_heads"]
        return out

    def __str__(self) -> str:
        kv = f" ({self.kv_heads} key/value)" if self.kv_heads != self.heads else ""
        return f"hidden {self.hidden}, {self.heads} heads{kv} x {self.head_dim}, FFN {self.intermediate}"
