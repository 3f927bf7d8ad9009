"""Why the sweep's held-out discrepancy (`eval_loss`) does not rank methods on its own: each student is compared with
the teacher on the structures it kept (its hidden channels, its heads), and the methods keep different ones. This
measures, for finished sweep runs, the teacher's own scale on each run's kept hidden channels (mean of h^2 over the
embedding output and every layer's output, on held-out text) next to the run's final hidden-state MSE, and the MSE
relative to that scale, which compares across methods.

    python benchmarks/kept_channels.py                      # the 11% and 22% runs at 150 steps, all seeds
    python benchmarks/kept_channels.py --runs 'sweep-64-150-*'

Writes benchmarks/kept_channels.json (one row per run and a mean per method) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def teacher_energy(teacher: str, heldout: Path, lines: int, seq: int) -> torch.Tensor:
    """Mean over held-out tokens of h^2 per channel, averaged over the embedding output and every layer: [hidden]."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher)
    model = AutoModel.from_pretrained(teacher).eval()
    text = heldout.read_text(encoding="utf-8").splitlines()[:lines]
    batch = tok(text, truncation=True, max_length=seq, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    per_layer = [(h.float().pow(2) * mask).sum((0, 1)) / mask.sum() for h in states]
    return torch.stack(per_layer).mean(0)


def main(argv=None) -> dict:
    from homodistil_hf.testing import minilm_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="sweep-64-150-*,sweep-128-150-*", help="comma-separated globs under --work_dir")
    p.add_argument("--work_dir", default=str(HERE / "_work" / "runs"))
    p.add_argument("--teacher", default=None, help="default: the installed all-MiniLM-L6-v2")
    p.add_argument("--heldout", default=str(HERE / "_work" / "data" / "heldout.txt"))
    p.add_argument("--lines", type=int, default=256, help="held-out lines (one sequence each)")
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--out", default=str(HERE / "kept_channels.json"))
    args = p.parse_args(argv)
    teacher = args.teacher or str(minilm_path())
    energy = teacher_energy(teacher, Path(args.heldout), args.lines, args.seq)
    rows = []
    for pattern in args.runs.split(","):
        for run in sorted(Path(args.work_dir).glob(pattern)):
            meta, record = run / "homodistil.json", run / "bench_record.json"
            if not (run.is_dir() and meta.is_file() and record.is_file()):
                continue
            kept = json.loads(meta.read_text())["kept_from_teacher"]["hidden"]
            final = json.loads(record.read_text())["history"][-1]
            scale = energy[kept].mean().item()
            name, _, seed = run.name.rpartition("-s")
            rows.append({"run": name, "seed": int(seed), "hidden": len(kept), "kept_energy": scale,
                         "all_energy": energy.mean().item(), "eval_loss_hidden": final.get("eval_loss_hidden"),
                         "eval_loss_attn": final.get("eval_loss_attn"),
                         "relative_hidden_mse": final["eval_loss_hidden"] / scale})
    summary = {}
    for name in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == name]
        summary[name] = {k: statistics.fmean(r[k] for r in mine) for k in
                         ("kept_energy", "eval_loss_hidden", "eval_loss_attn", "relative_hidden_mse")}
        summary[name]["n"] = len(mine)
    print(f"teacher mean h^2 over all {energy.numel()} channels: {energy.mean().item():.4f}")
    print(f"{'run':40s} {'n':>2s} {'kept h^2':>9s} {'hidden MSE':>11s} {'MSE / kept h^2':>15s} {'attn KL':>8s}")
    for name, s in summary.items():
        print(f"{name:40s} {s['n']:2d} {s['kept_energy']:9.4f} {s['eval_loss_hidden']:11.4f} "
              f"{s['relative_hidden_mse']:15.4f} {s['eval_loss_attn']:8.4f}")
    out = {"command": "python benchmarks/kept_channels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "teacher": Path(teacher).name, "lines": args.lines, "seq": args.seq, "runs": rows, "summary": summary}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
