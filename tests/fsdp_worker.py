"""One rank of the FSDP2 test (`torchrun --nproc_per_node 2`, gloo, CPU): a tiny model sharded with `fully_shard`,
pruned in masks mode by per-structure sensitivity computed from the sharded gradients, then gathered and exported.

Every rank writes what it decided (`<record>.rank<r>.json`); rank 0 exports the compact model to `<out>`. The test
runs the same steps in one process without sharding and compares.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

from homodistil_hf.export import export_model
from homodistil_hf.pruning.sharding import any_sharded, full_copy

sys.path.insert(0, os.path.dirname(__file__))
from fsdp_case import build, finish_rank, train  # noqa: E402


def main(family: str, record: str, out: str) -> None:
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    model = build(family)
    for layer in model.base_model.encoder.layer if family == "bert" else model.base_model.layers:
        fully_shard(layer)
    fully_shard(model)
    assert any_sharded(model), "fully_shard left no DTensor parameter"
    pruner, decisions = train(family, model, rank, world)
    plain = full_copy(model)  # collective: every rank gathers
    with open(f"{record}.rank{rank}.json", "w") as f:
        json.dump({"decisions": decisions}, f)
    if rank == 0:
        export_model(plain, out, pruner.state, physical=False)
    finish_rank()


if __name__ == "__main__":
    main(*sys.argv[1:4])
