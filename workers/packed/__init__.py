"""Packed execution: runs of one sweep that share the task data and the model's shapes train
together as one batched computation, each with its own init, seed, minibatch stream,
learning rate and schedule, optimizer state, clipping, divergence stop, evidence, plateau
tracking, probes and result.

- `workers.packed.grouping`: which runs can pack (`packable`, `pack_refusal`); no torch, so
  the dispatcher can decide packs without importing the training stack.
- `workers.packed.model`: R models of one architecture as one (`PackedModel`), parameters
  and buffers stacked along a leading run dimension.
- `workers.packed.optim`: torch.optim's update rules over stacked parameters, with per-run
  hyperparameters.
- `workers.packed.train`: the loop (`train_packed`), which hands each run's numbers to the
  same `workers.train.RunLog` the single loop uses.
"""
