"""Fine-tuning and evaluation tasks (GLUE, SQuAD): `arguments` (the flags both scripts share), `runtime` (checks,
loading, LoRA, the trainer, saving), `glue` and `squad` (each task's data and post-processing), `lora`."""
