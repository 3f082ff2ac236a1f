"""A training configuration small enough for a test to train in seconds on one CPU thread."""
TINY = {"model": "unet", "channels": 16, "channel_mult": [1, 2, 2], "emb_dim": 32, "epochs": 3, "batch_size": 64,
        "threads": 1, "n_samples": 10, "wandb_mode": "disabled"}
