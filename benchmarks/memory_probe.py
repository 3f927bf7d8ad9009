"""Peak memory (RSS) of one training run, in a fresh process; prints one line `MEMORY_PROBE {json}`.

    python benchmarks/memory_probe.py reference --teacher T --train_file F --steps 10 --batch 16 --seq 64
    python benchmarks/memory_probe.py distill <run_distill.py flags>

RSS is sampled every 2 ms by a thread. `rss_before_mb` is taken just before the first training step (models, data and
optimizer object built), `peak_train_mb` is the largest RSS seen while training, `increase_mb` their difference (what
training itself adds: activations, gradients, optimizer state, importance buffers). (`ru_maxrss` is not used: Linux
carries it over from the parent through fork + exec, so a child started by a big parent reports the parent's peak.) On a CUDA machine the same would be `torch.cuda.max_memory_allocated`; this one has no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from benchmarks import offline  # noqa: E402

offline()


class Sampler:
    def __init__(self, interval: float = 0.002):
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.active = False
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def _loop(self):
        while not self._stop:
            if self.active:
                self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def begin(self) -> int:
        before = self.rss()
        self.peak = before
        self.active = True
        return before

    def stop(self) -> None:
        self._stop = True
        self.thread.join()

    def end(self) -> None:
        self.peak = max(self.peak, self.rss())
        self.active = False


def _report(sampler: Sampler, before: int, steps: int, **extra) -> dict:
    mb = 1024 * 1024
    out = {"rss_before_mb": before / mb, "peak_train_mb": sampler.peak / mb, "increase_mb": (sampler.peak - before) / mb,
           "steps": steps, **extra}
    print("MEMORY_PROBE " + json.dumps(out), flush=True)
    return out


def probe_reference(argv) -> dict:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from benchmarks.reference import ReferenceDistiller, batches, pack

    p = argparse.ArgumentParser()
    p.add_argument("--teacher", required=True)
    p.add_argument("--train_file", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(a.teacher)
    lines = Path(a.train_file).read_text().splitlines()
    blocks = pack(tokenizer, lines, a.seq, a.batch * a.steps)
    ref = ReferenceDistiller(AutoModel.from_pretrained(a.teacher), max_steps=a.steps)
    it = batches(blocks, a.batch)
    sampler = Sampler()
    before = sampler.begin()
    for _ in range(a.steps):
        ref.step(next(it))
    sampler.end()
    sampler.stop()
    return _report(sampler, before, a.steps)


def probe_distill(argv) -> dict:
    from transformers import TrainerCallback

    import benchmarks.importance_ablations  # noqa: F401  (the memory part measures an ablation metric too)
    from homodistil_hf.cli import run_distill

    sampler = Sampler()
    seen = {}

    class MemoryCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["before"] = sampler.begin()

        def on_train_end(self, args, state, control, **kwargs):
            sampler.end()
            seen["steps"] = state.global_step

    run_distill.main(list(argv), callbacks=[MemoryCallback()])
    sampler.stop()
    return _report(sampler, seen["before"], seen.get("steps", 0))


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: memory_probe.py reference|distill ...\n{__doc__}")
        raise SystemExit(0)
    if not argv or argv[0] not in ("reference", "distill"):
        raise SystemExit("usage: memory_probe.py reference|distill ...")
    return probe_reference(argv[1:]) if argv[0] == "reference" else probe_distill(argv[1:])


if __name__ == "__main__":
    main()
