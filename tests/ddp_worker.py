"""Run by `tests/test_distributed.py` under `torchrun --nproc_per_node 2`: `run_distill.main` on each rank, recording

- every pruning decision the rank computed itself (before `Pruner._broadcast`) and the one it applied (after),
  with the importance scores it was taken from;
- the pruner's mode (masks or physical) and final state;
- every file the rank wrote under --output_dir (Python-level opens for writing, folders made, renames, and
  `torch.save` / the safetensors writers, which open their files from native code).

Each rank writes `$HOMODISTIL_DDP_RECORD/rank{RANK}.json`. Usage: torchrun ... tests/ddp_worker.py <run_distill flags>
"""

import json
import os
import sys
from pathlib import Path

RECORD = Path(os.environ["HOMODISTIL_DDP_RECORD"])
RANK = int(os.environ["RANK"])


def _output_dir(argv):
    return Path(argv[argv.index("--output_dir") + 1]).resolve()


def main(argv):
    out = _output_dir(argv)
    writes: list[str] = []

    def note(path):
        try:
            path = Path(os.fsdecode(path)).resolve()
        except (TypeError, ValueError):
            return
        if path == out or out in path.parents:
            writes.append(str(path.relative_to(out)))

    def audit(event, args):
        if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            mode, flags = args[1], args[2]
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
                (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing:
                note(args[0])
        elif event in ("os.rename", "os.mkdir", "os.remove", "shutil.rmtree"):
            note(args[1] if event == "os.rename" else args[0])

    sys.addaudithook(audit)

    import safetensors.torch
    import torch
    import transformers.modeling_utils

    import homodistil_hf.pruning.pruner as pruner_module
    from homodistil_hf.cli import run_distill
    from homodistil_hf.pruning.pruner import Pruner

    torch.set_num_threads(1)

    def recording(save_file):
        def wrapper(tensors, filename, *args, **kwargs):
            note(filename)
            return save_file(tensors, filename, *args, **kwargs)

        return wrapper

    torch_save = torch.save

    def recording_torch_save(obj, f, *args, **kwargs):
        if isinstance(f, str | os.PathLike):
            note(f)
        return torch_save(obj, f, *args, **kwargs)

    torch.save = recording_torch_save
    transformers.modeling_utils.safe_save_file = recording(transformers.modeling_utils.safe_save_file)
    pruner_module.save_file = recording(pruner_module.save_file)
    safetensors.torch.save_file = recording(safetensors.torch.save_file)

    decisions = []
    pruners = []
    select, broadcast = Pruner.select, Pruner._broadcast

    def recorded_select(self, scores, widths):
        pruners.append(self)
        decisions.append({"widths": list(widths.as_dict().values()),
                          "scores": {k: v.float().reshape(-1).tolist() for k, v in scores.items()}})
        return select(self, scores, widths)

    def recorded_broadcast(state):
        result = broadcast(state)
        decisions[-1].update(local=state.to_dict(), applied=result.to_dict())
        return result

    Pruner.select = recorded_select
    Pruner._broadcast = staticmethod(recorded_broadcast)
    run_distill.main(argv)
    pruner = pruners[-1] if pruners else None
    record = {
        "rank": RANK,
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "physical": pruner.physical if pruner else None,
        "final": pruner.state.to_dict() if pruner else None,
        "decisions": decisions,
        "writes": sorted(set(writes)),
    }
    RECORD.mkdir(parents=True, exist_ok=True)
    (RECORD / f"rank{RANK}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1:])
