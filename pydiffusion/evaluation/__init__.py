"""What a trained run is measured by: test metrics on the test set (metrics, with SSIM for images in ssim) and the
sample quality its reference classifiers judge: accuracy, FD-1D and its floor, coverage, copying (quality)."""
