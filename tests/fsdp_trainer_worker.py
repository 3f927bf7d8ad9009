"""One rank of the FSDP2-through-the-Trainer test (`torchrun --nproc_per_node 2`, gloo, CPU): `HomoDistilTrainer`
with `fsdp=True`, `fsdp_config={"version": 2, ...}` and pruning targets, trained on the schedule of
`fsdp_trainer_case.py`, then `save_model()` (the compact export: every rank gathers, rank 0 writes).

Each rank writes `<record>/rank<r>.json`: the pruning state after each pruning step, the scores each decision was
taken from and the decision this rank took from them (before rank 0's decision is broadcast), whether the student's parameters and gradients were DTensors
while it trained, what accelerate's state was, and the teacher's parameter types.

Usage: torchrun --nproc_per_node 2 tests/fsdp_trainer_worker.py <family> <record dir> <output dir>
       [<save every N steps, 0: no checkpoints> [<checkpoint to resume from, or ""> [fsdp | ddp]]]
"""

import inspect
import json
import os
import sys
from pathlib import Path


def patch_accelerate_fsdp_on_cpu() -> None:
    """TEST ONLY, in this worker process: let accelerate take its FSDP path on CPU.

    `AcceleratorState.__init__` (accelerate/state.py, about lines 985-1013 in accelerate 1.15) sets
    `DistributedType.FSDP` and keeps the FSDP plugin only inside its branch for accelerator distributed types
    (`MULTI_GPU`, `MULTI_XPU`, `MULTI_NPU`, ...); CPU processes are `MULTI_CPU`, skip the branch, and the Trainer
    wraps the model in DDP instead. Here, after the original `__init__`, a `MULTI_CPU` state that was given an FSDP
    plugin gets what that branch would have set: `distributed_type = FSDP` and `fsdp_plugin`, copied into the
    `PartialState` as the end of `__init__` copies it (the branch also passes a mixed precision to the plugin; this
    run is fp32, so there is none to pass). Everything after that is
    accelerate's and torch's own FSDP2 code (`fully_shard` over gloo, which runs on CPU).

    `homodistil_hf.distributed.accelerate_fsdp_on_cpu` is switched to True with it: the package refuses `--fsdp` on
    CPU for real users precisely because unpatched accelerate would run DDP.
    """
    import accelerate.state
    from accelerate.utils import DistributedType

    import homodistil_hf.distributed

    original = accelerate.state.AcceleratorState.__init__
    signature = inspect.signature(original)

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        plugin = signature.bind(self, *args, **kwargs).arguments.get("fsdp_plugin")
        if self.distributed_type == DistributedType.MULTI_CPU and plugin is not None:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugin
            # As the end of the original __init__ does: every later `AcceleratorState()` copies this in again.
            accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    accelerate.state.AcceleratorState.__init__ = init
    homodistil_hf.distributed.accelerate_fsdp_on_cpu = lambda: True


def main(family: str, record: str, out: str, save_steps: str = "0", resume: str = "", sharding: str = "fsdp") -> None:
    import torch
    import torch.distributed as dist
    from transformers import default_data_collator

    patch_accelerate_fsdp_on_cpu()
    torch.set_num_threads(1)

    from homodistil_hf import HomoDistilTrainer
    from homodistil_hf.pruning.pruner import Pruner

    sys.path.insert(0, os.path.dirname(__file__))
    from fsdp_case import finish_rank
    from fsdp_trainer_case import Recorder, config, dataset, teacher

    scores, local = [], []
    select, broadcast = Pruner.select, Pruner._broadcast

    def recorded_select(self, s, widths):
        scores.append({k: v.float().reshape(-1).tolist() for k, v in s.items()})
        return select(self, s, widths)

    def recorded_broadcast(state):
        local.append(state.to_dict())  # this rank's own decision, before rank 0's is broadcast
        return broadcast(state)

    Pruner.select = recorded_select
    Pruner._broadcast = staticmethod(recorded_broadcast)

    from homodistil_hf.compaction import CompactionMixin

    held, compact_student = [], CompactionMixin._compact_student

    def recorded_compact(self):  # the optimizer state this rank holds for the hand-off (FSDP2: rank 0 only)
        folder = compact_student(self)
        held.append(sum(v.numel() for entry in self._handoff["optimizer"].get("state", {}).values()
                        for v in entry.values() if torch.is_tensor(v) and v.dim() > 0))
        return folder

    CompactionMixin._compact_student = recorded_compact

    args = config(family, out, world=int(os.environ["WORLD_SIZE"]), save_steps=int(save_steps), sharding=sharding)
    trainer = HomoDistilTrainer(teacher=teacher(family), args=args, train_dataset=dataset(family),
                                data_collator=default_data_collator)
    recorder = Recorder(trainer)
    trainer.add_callback(recorder)
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_model()  # the export: collective gather, rank 0 writes

    rank = dist.get_rank()
    state = trainer.accelerator.state
    info = {
        "rank": rank,
        "world_size": dist.get_world_size(),
        "distributed_type": str(state.distributed_type),
        "fsdp_version": getattr(getattr(state, "fsdp_plugin", None), "fsdp_version", None),
        "student_class": type(trainer.model).__name__,
        "physical": trainer.pruner.physical,
        "param_types": sorted(recorder.param_types),
        "grad_types": sorted(recorder.grad_types),
        "sharded_steps": recorder.sharded_steps,
        "physical_steps": recorder.physical_steps,
        "numel": recorder.numel,
        "teacher_param_types": sorted({"DTensor" if hasattr(p, "placements") else type(p).__name__
                                       for p in trainer.teacher.parameters()}),
        "teacher_trainable": any(p.requires_grad for p in trainer.teacher.parameters()),
        "decisions": recorder.decisions,
        "scores": scores,
        "local_decisions": local,
        "final": trainer.pruner.state.to_dict(),
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "handoff_optimizer_numel": held,
    }
    Path(record).mkdir(parents=True, exist_ok=True)
    (Path(record) / f"rank{rank}.json").write_text(json.dumps(info))
    finish_rank()


if __name__ == "__main__":
    main(*sys.argv[1:7])
