"""Training a run: the loop with resumption, EMA and checkpoints (loop), the training modes as trainers that turn a
batch into a dict of losses (trainers), and the run's Weights & Biases tracking (tracking)."""
