"""Training: the epoch loop, checkpoints, and resuming."""
