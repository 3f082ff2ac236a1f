"""What the test tiers share: the repository root and a snakemake runner (workflow), a tiny training
configuration (configs), record comparison without timings (timings), and closed-form Gaussian data
(gaussian_data)."""
