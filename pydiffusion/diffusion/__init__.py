"""The diffusion math, over nothing of the package's but config and the data's labels: noise paths and posteriors
(paths), the losses (losses), the fused ops q_sample and posterior_step with their PyTorch reference (ops,
reference; the kernels in csrc/), the network read as a denoiser (denoiser), and the samplers (samplers)."""
