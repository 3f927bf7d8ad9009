"""Decoder training step: `HomoDistilTrainer` vs a plain PyTorch causal-LM distillation step (issue 21's goal:
package step <= 1.10x the reference).

    python benchmarks/decoder_step.py [--steps 10] [--rounds 2] [--threads 2] [--out benchmarks/decoder_step.json]

Models: one random `LlamaForCausalLM` (hidden 256, 4 layers, 8 query heads in 4 key/value groups, FFN 1024,
vocabulary 49,152 as SmolLM2, tied head, sdpa attention); the teacher and the student are copies of it (the student a
`deepcopy`, the homotopic start). Data: the same `--batch` x `--seq` batches of random token ids, in the same order,
labels = inputs.

The reference (`ReferenceDecoderDistiller`, written here without the package): teacher forward under `no_grad`,
student forward, full [batch, seq, vocab] logits, then
- next-token CE: `F.cross_entropy` of logits[:, :-1] against labels[:, 1:] (mean over the predicted tokens);
- logit KD: T^2 KL(teacher || student) of the log-softmaxes at T = 2, summed over the vocabulary, mean over every
  position;
- hidden MSE: for each pair (embeddings, layer 1..L; `output_hidden_states`, the last one after the final norm),
  per token the mean over channels of the squared error, mean over tokens, averaged over the L + 1 pairs;
loss = CE + KD + hidden (alpha 1 each), backward, `clip_grad_norm_` 1.0, fused AdamW (lr 5e-5, eps 1e-6, weight
decay 0, as the Trainer's defaults under `HomoDistilConfig`), a linear LR schedule step, `zero_grad`.

The package: a `HomoDistilTrainer` (a sequential sampler so that it sees the same batches) with no pruning targets and
default flags (hidden loss mse, alpha_attn auto = 0 for decoders, temperature 2, max_grad_norm 1.0, adamw_torch_fused
lr 5e-5 eps 1e-6), once with `logits_from_hidden=True` (the default: logit terms from the final hidden states and
the LM head, chunk by chunk) and once with `logits_from_hidden=False` (materialised logits). Each optimizer step is
timed from `on_step_begin` to `on_step_end` by a `TrainerCallback`.

Each run does one untimed warm-up step, then `--steps` timed steps. Rounds alternate the runs in one process
(reference, fused, materialised, reference, fused, materialised, ...); a run's time is the mean of its timed steps,
and the headline is the best (smallest) round mean of each. Before timing, the three loss computations are checked
to agree on one batch with a perturbed student (`terms_check` in the JSON), so that the same terms are timed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import offline  # noqa: E402

offline()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from torch.utils.data import Dataset, SequentialSampler  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback, default_data_collator  # noqa: E402

LR, EPS, TEMPERATURE, MAX_GRAD_NORM = 5e-5, 1e-6, 2.0, 1.0


# --- the reference, without the package ------------------------------------------------------------------------------
def reference_loss(s_out, t_out, labels: torch.Tensor, temperature: float = TEMPERATURE) -> dict[str, torch.Tensor]:
    """The three terms of the reference from full outputs (logits [B, T, V], hidden_states L + 1 x [B, T, H])."""
    s_logits, t_logits = s_out.logits.float(), t_out.logits.float()
    vocab = s_logits.shape[-1]
    ce = F.cross_entropy(s_logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1))
    s_log = F.log_softmax(s_logits / temperature, dim=-1)
    t_log = F.log_softmax(t_logits / temperature, dim=-1)
    kd = (t_log.exp() * (t_log - s_log)).sum(-1).mean() * temperature**2
    pairs = list(zip(s_out.hidden_states, t_out.hidden_states, strict=True))
    hidden = sum((s.float() - t.float()).pow(2).mean(-1).mean() for s, t in pairs) / len(pairs)
    return {"ce": ce, "kd": kd, "hidden": hidden}


class ReferenceDecoderDistiller:
    """Teacher + student (a copy unless given), fused AdamW with a linear schedule; `step(batch)` is one optimizer
    step of CE + KD + hidden MSE (see the module docstring)."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module | None = None, max_steps: int = 100):
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = (student if student is not None else copy.deepcopy(teacher)).train().requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=LR, eps=EPS, weight_decay=0.0, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda s: max(0.0, 1.0 - s / max(1, max_steps)))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            t_out = self.teacher(**inputs, output_hidden_states=True)
        s_out = self.student(**inputs, output_hidden_states=True)
        return sum(reference_loss(s_out, t_out, batch["labels"]).values())

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        loss = self.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


# --- models and data -------------------------------------------------------------------------------------------------
def base_model(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, seq: int,
               seed: int = 0) -> LlamaForCausalLM:
    """The random Llama both sides copy (tied head, dropout 0, sdpa attention)."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, head_dim=hidden // heads, intermediate_size=intermediate,
                         max_position_embeddings=max(seq, 128), tie_word_embeddings=True, attention_dropout=0.0,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    model.set_attn_implementation("sdpa")
    return model


class Rows(Dataset):
    """Rows of random token ids (labels = inputs, all positions real)."""

    def __init__(self, n: int, seq: int, vocab: int, seed: int = 0):
        self.ids = torch.randint(3, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    def batch(self, index: int, size: int) -> dict[str, torch.Tensor]:
        """Batch `index` in the order a sequential sampler gives them (cycling)."""
        rows = [(index * size + j) % len(self) for j in range(size)]
        return default_data_collator([self[i] for i in rows])


# --- the package side ------------------------------------------------------------------------------------------------
class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, from `on_step_begin` to `on_step_end`."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def make_trainer(teacher, student, data: Rows, batch: int, max_steps: int, fused: bool, out_dir: Path,
                 callbacks=()):
    from homodistil_hf.config import HomoDistilConfig
    from homodistil_hf.trainer import HomoDistilTrainer

    class SequentialTrainer(HomoDistilTrainer):
        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    args = HomoDistilConfig(
        output_dir=str(out_dir), use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
        max_steps=max_steps, per_device_train_batch_size=batch, learning_rate=LR, adam_epsilon=EPS, weight_decay=0.0,
        max_grad_norm=MAX_GRAD_NORM, temperature=TEMPERATURE, hidden_loss="mse", alpha_attn=0.0,
        logits_from_hidden=fused, dataloader_num_workers=0, logging_strategy="no", seed=0)
    return SequentialTrainer(model=student, teacher=teacher, args=args, train_dataset=data,
                             data_collator=default_data_collator, callbacks=list(callbacks))


def run_package(base, data: Rows, batch: int, steps: int, fused: bool, out_dir: Path) -> list[float]:
    """One warm-up step + `steps` timed steps of the trainer on fresh copies of `base`; the timed steps' seconds."""
    timer = StepTimer()
    trainer = make_trainer(copy.deepcopy(base), copy.deepcopy(base), data, batch, steps + 1, fused, out_dir,
                           callbacks=[timer])
    trainer.train()
    if len(timer.times) != steps + 1:
        raise RuntimeError(f"expected {steps + 1} timed steps, got {len(timer.times)}")
    return timer.times[1:]


def run_reference(base, data: Rows, batch: int, steps: int) -> list[float]:
    """The same for the reference (its batch k is the trainer's batch k)."""
    ref = ReferenceDecoderDistiller(copy.deepcopy(base), copy.deepcopy(base), max_steps=steps + 1)
    times = []
    for k in range(steps + 1):
        start = time.perf_counter()
        ref.step(data.batch(k, batch))
        times.append(time.perf_counter() - start)
    return times[1:]


def terms_check(base, data: Rows, batch: int, out_dir: Path) -> dict[str, float]:
    """The reference loss and the trainer's `compute_loss` (fused and materialised) on batch 0 with a perturbed
    student (so that every term is non-zero): the same number up to float rounding."""
    student = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    inputs = data.batch(0, batch)
    ref = ReferenceDecoderDistiller(copy.deepcopy(base), copy.deepcopy(student))
    out = {"reference": float(ref.loss(inputs).detach())}
    for name, fused in (("fused", True), ("materialised", False)):
        trainer = make_trainer(copy.deepcopy(base), copy.deepcopy(student), data, batch, 1, fused, out_dir)
        trainer.model.train()
        out[name] = float(trainer.compute_loss(trainer.model, dict(inputs)).detach())
    out["max_abs_diff"] = max(abs(out[k] - out["reference"]) for k in ("fused", "materialised"))
    return out


def _summary(times: list[float]) -> dict:
    return {"mean_s": round(statistics.fmean(times), 4), "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4), "steps_s": [round(t, 4) for t in times]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (after one warm-up step)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--goal", type=float, default=1.10)
    p.add_argument("--work_dir", type=Path, default=ROOT / "benchmarks" / "_work" / "decoder_step")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "decoder_step.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    load_before = os.getloadavg()
    base = base_model(a.vocab, a.hidden, a.layers, a.heads, a.kv_heads, a.intermediate, a.seq)
    data = Rows(a.batch * (a.steps + 1), a.seq, a.vocab)
    check = terms_check(base, data, a.batch, a.work_dir)
    print("terms_check " + json.dumps(check), flush=True)

    arms = {"reference": lambda: run_reference(base, data, a.batch, a.steps),
            "package_fused": lambda: run_package(base, data, a.batch, a.steps, True, a.work_dir),
            "package_materialised": lambda: run_package(base, data, a.batch, a.steps, False, a.work_dir)}
    rounds = []
    for r in range(a.rounds):
        entry = {"round": r + 1}
        for name, fn in arms.items():
            load = os.getloadavg()[0]
            times = fn()
            entry[name] = {**_summary(times), "load_1min_before": round(load, 2)}
            print(f"round {r + 1} {name}: mean {entry[name]['mean_s']:.3f} s/step "
                  f"(median {entry[name]['median_s']:.3f}, load {load:.2f})", flush=True)
        rounds.append(entry)
    best = {name: min(e[name]["mean_s"] for e in rounds) for name in arms}
    best_median = {name: min(e[name]["median_s"] for e in rounds) for name in arms}
    ratios = {name: round(best[name] / best["reference"], 3) for name in arms if name != "reference"}
    ratios_median = {name: round(best_median[name] / best_median["reference"], 3) for name in arms
                     if name != "reference"}
    per_round = [{name: round(e[name]["mean_s"] / e["reference"]["mean_s"], 3) for name in arms if name != "reference"}
                 for e in rounds]
    result = {
        "command": " ".join(["python", "benchmarks/decoder_step.py", *(sys.argv[1:] if argv is None else argv)]),
        "what": "seconds per optimizer step (mean of the timed steps of a run; best of the rounds); ratio = package / "
                "reference",
        "goal": f"package_fused / reference <= {a.goal}",
        "met": ratios["package_fused"] <= a.goal,
        "best_mean_s": {k: round(v, 4) for k, v in best.items()},
        "ratio_best_mean": ratios,
        "best_median_s": {k: round(v, 4) for k, v in best_median.items()},
        "ratio_best_median": ratios_median,
        "ratio_per_round": per_round,
        "terms_check": check,
        "rounds": rounds,
        "settings": {"steps_per_run": a.steps, "warmup_steps": 1, "rounds": a.rounds, "order": list(arms),
                     "batch": a.batch, "seq": a.seq, "torch_threads": a.threads, "vocab": a.vocab, "hidden": a.hidden,
                     "layers": a.layers, "heads": a.heads, "kv_heads": a.kv_heads, "intermediate": a.intermediate,
                     "tied_head": True, "attention": "sdpa", "temperature": TEMPERATURE, "lr": LR, "adam_eps": EPS,
                     "max_grad_norm": MAX_GRAD_NORM, "optimizer": "AdamW fused, linear schedule"},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "note": "CPU cores shared with other jobs"},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("best_mean_s", "ratio_best_mean", "ratio_best_median", "met",
                                              "load_average_before", "load_average_after", "wall_s")}, indent=1))
    return result


if __name__ == "__main__":
    main()
