"""Stage 2: attention-aligned policy optimisation (GRPO family with entropy-aware adaptive clipping)."""
