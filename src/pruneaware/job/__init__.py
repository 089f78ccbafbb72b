"""The main job: train dense and pruned models on built-in data, checkpointing, then report."""
