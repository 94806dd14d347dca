"""Training: the epoch loop, optimiser and schedule, devices, and resuming (the run folder and
its checkpoints are the model store's: digitnet/store/run.py)."""
