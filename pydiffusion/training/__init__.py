"""Training a run: the loop with resumption, EMA and checkpoints (loop), the training modes as trainers that turn a
batch into a dict of losses, behind the interface a plugin implements too (trainers), two published techniques as
worked plugins of it (min_snr, immiscible), and the run's Weights & Biases tracking (tracking)."""
