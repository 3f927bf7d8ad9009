"""The pruning machinery, one module per concept, generic over model families (the adapters in `..arch` say where
each structure lives; this package imports `arch`, never the other way):

- `targets`: a requested shape validated against the teacher, and the parameter-count search;
- `groups`: which weights and activations make up each prunable structure;
- `importance`: scores per structure (names in `..registry`);
- `schedule`: how widths fall over training; `state`: which teacher structures the student keeps;
- `surgery` (physical) and `masking` (same function, full-size tensors); `sharding`: FSDP2 shards;
- `pruner` ties them together and `callback` runs it inside the Trainer.
"""
