"""The run shared by the FSDP2 worker and its single-process reference (tests/test_fsdp.py)."""

import os
import sys

import torch
import torch.distributed as dist
import transformers

from homodistil_hf.arch import Shape
from homodistil_hf.testing import tiny_model

TARGET = {"bert": Shape(32, 2, 16, 48), "llama": Shape(24, 4, 8, 20, 2)}
# step -> widths at that pruning step (a function of the target), then the target itself
SCHEDULE = {
    2: lambda t: Shape(t.hidden + 16, t.heads + 1 if t.kv_heads == t.heads else t.heads, t.head_dim,
                       t.intermediate + 40, t.kv_heads),
    4: lambda t: t,
}
STEPS = 6


def build(family: str):
    torch.manual_seed(0)
    if family == "bert":
        return tiny_model("bert", "mlm").train()
    config = transformers.LlamaConfig(hidden_size=48, num_attention_heads=6, num_key_value_heads=3, head_dim=8,
                                      intermediate_size=64, num_hidden_layers=2, vocab_size=60,
                                      max_position_embeddings=32, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config).train()


def batches(family: str):
    vocab = 60 if family == "llama" else 236
    g = torch.Generator().manual_seed(1)
    return [torch.randint(5, vocab, (4, 12), generator=g) for _ in range(STEPS)]


def train(family: str, model, rank: int = 0, world: int = 1) -> tuple[object, list[dict]]:
    """The run: rank `rank` of `world` takes its share of every batch; masks mode, per-structure sensitivity.
    Returns the pruner and its state after each pruning step."""
    from homodistil_hf.pruning.importance import StructureImportance
    from homodistil_hf.pruning.pruner import Pruner

    importance = StructureImportance(element="abs", score="ema_x_uncertainty")  # per-structure PLATON
    importance.chunk_elements = 50  # several row blocks per shard: block offsets inside a shard are exercised
    pruner = Pruner(model, TARGET[family], importance, physical=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    decisions = []
    for step, ids in enumerate(batches(family)):
        local = ids.chunk(world)[rank]
        model(input_ids=local, labels=local).loss.backward()
        pruner.importance.step()
        if step in SCHEDULE:
            pruner.prune_to(SCHEDULE[step](TARGET[family]))
            decisions.append(pruner.state.to_dict())
        optimizer.step()
        optimizer.zero_grad()
    return pruner, decisions


def finish_rank() -> None:
    """End a torchrun worker once every rank has written its files: a barrier, then `os._exit(0)`.

    Why not `destroy_process_group()` and a normal exit: FSDP2's device mesh keeps references to the gloo process
    group, so it is really torn down during interpreter finalisation, where gloo's worker threads can be destroyed
    still joinable ("terminate called without an active exception", SIGABRT). That happened once in CI after all
    the work was done and checked; exiting without finalisation leaves nothing to tear down.
    """
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
