"""The networks: the denoising networks f(x, t, z, y) (backbones: UNet1D, UNet2D, ResMLP), the reference classifiers
of sample quality with their one training loop (classifiers), and the noise-aware classifier p(y | x_t, t) of
classifier guidance (noisy_classifier)."""
