"""Part 1b (`--only inference`): inference latency of the exported student against the teacher, and how close the
measured speedup comes to the FLOPs speedup; its README section and summary row."""

from __future__ import annotations

import statistics
import time

from benchmarks.common import Bench, log
from benchmarks.helpers import fmt, table

TITLE = "\n## 1b. Inference latency of the exported student vs the teacher\n"

MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention",
              "aten::_scaled_dot_product_attention_math")


def analytic_flops(config, batch: int, seq: int) -> dict[str, int]:
    """Multiply-add FLOPs (2 per MAC) of one encoder forward: the linear layers, and the two attention matmuls
    (Q K^T and probabilities x V) that the CPU SDPA kernel runs and FlopCounterMode does not see."""
    h, f, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = batch * seq
    linear = L * 2 * tokens * (4 * h * h + 2 * h * f) + 2 * batch * h * h  # + pooler
    attention = L * 2 * 2 * batch * seq * seq * h
    return {"linear": linear, "attention": attention, "total": linear + attention}


def run(b: Bench) -> None:
    """`results["inference"]`: latencies (interleaved forwards), FLOPs (analytic and counted), speedups and the
    efficiency, at the default thread count and at 1 thread."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel, AutoTokenizer

    from benchmarks.reference import pack
    from homodistil_hf import Shape
    from homodistil_hf.loading import make_student

    c = b.cfg["inference"]
    teacher = AutoModel.from_pretrained(b.teacher).eval()
    hd, heads, ffn = b.target
    target = Shape(hd, heads, hd // heads, ffn)
    exported = b.work / "runs" / f"homodistil-s{b.cfg['seeds'][0]}"
    if (exported / "config.json").is_file():
        student, source = AutoModel.from_pretrained(exported).eval(), f"exported homodistil student ({exported.name})"
    else:
        student, _ = make_student(teacher, "truncate", target)
        student, source = student.eval(), "a stock model of the target shape (teacher truncated; no export yet)"
    tokenizer = AutoTokenizer.from_pretrained(b.teacher)
    blocks = pack(tokenizer, b.train_file.read_text().splitlines(), c["seq"], c["batch"])
    batch = {k: torch.cat([x[k] for x in blocks]) for k in blocks[0]}
    models = {"teacher": teacher, "student": student}
    counted = {}
    with torch.inference_mode():
        for name, m in models.items():
            counter = FlopCounterMode(display=False)
            with counter:
                m(**batch)
            counted[name] = counter.get_total_flops()
    flops = {name: analytic_flops(m.config, c["batch"], c["seq"]) for name, m in models.items()}
    default_threads = torch.get_num_threads()
    by_threads = {}
    try:
        for threads in dict.fromkeys([default_threads, 1]):
            torch.set_num_threads(threads)
            times = {n: [] for n in models}
            with torch.inference_mode():
                for _ in range(c["warmup"]):
                    for m in models.values():
                        m(**batch)
                for _ in range(c["repeats"]):  # interleaved: teacher, student, teacher, student, ...
                    for name, m in models.items():
                        t0 = time.perf_counter()
                        m(**batch)
                        times[name].append(time.perf_counter() - t0)
                ops = {name: _op_breakdown(m, batch) for name, m in models.items()}
            med = {n: statistics.median(v) for n, v in times.items()}
            measured = med["teacher"] / med["student"]
            by_threads[str(threads)] = {
                "latency_s": times, "median_latency_s": med, "speedup_measured": measured,
                "median_paired_speedup": statistics.median(t / s for t, s in zip(times["teacher"], times["student"])),
                "efficiency": measured / (flops["teacher"]["total"] / flops["student"]["total"]),
                "op_time_s": ops,
                "op_speedup": {k: ops["teacher"][k] / ops["student"][k] for k in ops["teacher"] if ops["student"].get(k)}}
    finally:
        torch.set_num_threads(default_threads)
    main = by_threads[str(default_threads)]
    speedup_flops = flops["teacher"]["total"] / flops["student"]["total"]
    b.results["inference"] = {
        "batch": c["batch"], "seq": c["seq"], "repeats": c["repeats"], "student_source": source,
        "attn_implementation": getattr(student.config, "_attn_implementation", None), "threads": default_threads,
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "student_params": sum(p.numel() for p in student.parameters()),
        "flops_analytic": flops, "flops_counted": counted,
        "speedup_flops": speedup_flops, "speedup_flops_counted": counted["teacher"] / counted["student"],
        **{k: main[k] for k in ("median_latency_s", "speedup_measured", "median_paired_speedup", "efficiency",
                                "op_time_s", "op_speedup")},
        "by_threads": by_threads,
        "definition": "efficiency = speedup_measured / speedup_flops; speedup_measured = median teacher latency / "
                      "median student latency (interleaved forward passes under inference_mode, sdpa attention, "
                      f"{default_threads} threads); speedup_flops = teacher FLOPs / student FLOPs counted analytically "
                      "(linear layers + the attention matmuls; FlopCounterMode gives the same for the linear layers "
                      "but does not see the CPU SDPA kernel); LayerNorm, GELU, softmax, embeddings are not FLOPs "
                      "here; goal efficiency >= 0.9",
    }
    log(f"inference: measured speedup {main['speedup_measured']:.2f}x, FLOPs speedup {speedup_flops:.2f}x, "
        f"efficiency {main['efficiency']:.2f} ({default_threads} threads); 1 thread "
        f"{by_threads['1']['efficiency']:.2f}")


def _op_breakdown(model, batch, repeats: int = 3) -> dict[str, float]:
    """Seconds per forward in matmul-like ops (the FLOPs the counter sees) vs everything else (LayerNorm, GELU,
    softmax, embeddings, adds, copies), from the torch profiler's self CPU time (median of `repeats` forwards)."""
    from torch.profiler import ProfilerActivity, profile

    samples = []
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(**batch)
        matmul = other = 0.0
        for e in prof.key_averages():
            if e.key.startswith("aten::") or e.key.startswith("mkldnn"):
                t = e.self_cpu_time_total / 1e6
                if e.key in MATMUL_OPS:
                    matmul += t
                else:
                    other += t
        samples.append((matmul, other))
    samples.sort(key=lambda x: x[0] + x[1])
    matmul, other = samples[len(samples) // 2]
    return {"matmul": matmul, "other": other, "total": matmul + other}


def summary_rows(results: dict, goals: dict) -> list[list]:
    """The summary table\'s row of goal 1b (only when the part has run)."""
    inf = results["inference"]
    v = inf.get("efficiency")
    return [[f"1b inference efficiency = measured speedup / FLOPs speedup (batch {inf.get('batch')}, seq "
             f"{inf.get('seq')})", f"{fmt(inf.get('speedup_measured'), 2)}x / {fmt(inf.get('speedup_flops'), 2)}x"
             f" = {fmt(v)}", ">= 0.9", fmt(v is not None and v >= goals.get("inference_efficiency", 0.9))]]


def section(results: dict, figures: dict) -> list[str]:
    """README section 1b (`TITLE` above it; only when the part has run)."""
    out: list[str] = []
    w = out.append
    inf = results["inference"]
    w(f"Student: {inf['student_source']}. Definition: {inf['definition']}.\n")
    fl = inf.get("flops_analytic")
    if fl:
        w(table(["model", "params", "GFLOPs / forward (linear + attention)", "FlopCounterMode GFLOPs",
                 "median latency (s)"], [
            [n, fmt(inf[f"{n}_params"]), f"{fl[n]['total'] / 1e9:.1f} ({fl[n]['linear'] / 1e9:.1f} + "
             f"{fl[n]['attention'] / 1e9:.1f})", f"{inf['flops_counted'][n] / 1e9:.1f}",
             fmt(inf["median_latency_s"][n], 4)] for n in ("teacher", "student")]))
    w(f"\nSpeedup measured {inf['speedup_measured']:.2f}x (median of paired ratios "
      f"{inf['median_paired_speedup']:.2f}x), FLOPs speedup {inf['speedup_flops']:.2f}x, efficiency "
      f"**{inf['efficiency']:.2f}** (goal >= 0.9).")
    rows = []
    for threads, r in (inf.get("by_threads") or {}).items():
        for n in ("teacher", "student"):
            o = r["op_time_s"][n]
            rows.append([threads, n, fmt(r["median_latency_s"][n], 4), fmt(o["matmul"], 4), fmt(o["other"], 4),
                         f"{100 * o['other'] / o['total']:.0f}%"])
        rows.append([threads, "**speedup**", fmt(r["speedup_measured"], 2) + "x",
                     fmt(r["op_speedup"].get("matmul"), 2) + "x", fmt(r["op_speedup"].get("other"), 2) + "x",
                     f"efficiency {fmt(r['efficiency'], 2)}"])
    if rows:
        w("\nBy thread count, with the torch profiler's split of one forward (self CPU time, median of 3) into "
          "matmul/attention kernels and everything else (LayerNorm, GELU, softmax, adds, copies, embeddings):\n")
        w(table(["threads", "model", "latency (s)", "matmul + attention (s)", "other ops (s)", "other share"], rows))
    return out
