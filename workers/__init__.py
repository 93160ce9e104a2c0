"""Everything that runs on a Ray worker: tasks, models, inits, optimizers, the train loop,
landscape probes and the diagnosis. Plain PyTorch; no FastAPI. Importing this package does
not import torch (workers.config and workers.remote are torch-free)."""
