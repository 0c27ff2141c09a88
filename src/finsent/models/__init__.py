"""Models: offline and hub weights, loading, LoRA, and the early-exit heads and segments."""
