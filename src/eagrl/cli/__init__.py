"""Hydra entry points, one per stage (console scripts ``eagrl-<stage>``)."""
