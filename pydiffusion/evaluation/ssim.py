"""The structural similarity index (SSIM, Wang et al. 2004) of image batches, as scikit-image computes it.

`ssim(x, y, data_range)` equals `skimage.metrics.structural_similarity(x_i, y_i, data_range=data_range,
channel_axis=0)` for each image pair (tests/test_images.py holds them equal in float64 to 1e-10) with
scikit-image's defaults: a 7 x 7 uniform window (not the paper's 11 x 11 Gaussian, which does not fit an 8 x 8
image), K1 = 0.01, K2 = 0.03, the sample covariance (N / (N - 1) with N = 49), the local SSIM averaged over the
positions where the whole window lies inside the image (skimage filters the whole image, then crops the
border of width 3), then over channels.
"""
import torch
import torch.nn.functional as F


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, win_size: int = 7, K1: float = 0.01,
         K2: float = 0.03) -> torch.Tensor:
    """SSIM [B] of the image pairs x, y [B, C, H, W] whose values span `data_range` (2 for images in [-1, 1])."""
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"ssim expects two image batches [B, C, H, W] of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if win_size % 2 != 1 or min(x.shape[-2:]) < win_size:
        raise ValueError(f"ssim: the window ({win_size}) must be odd and fit the images {tuple(x.shape[-2:])}")
    mean = lambda a: F.avg_pool2d(a, win_size, stride=1)  # the local mean over each whole window
    n = win_size * win_size
    cov_norm = n / (n - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    C1, C2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    local = (2 * ux * uy + C1) * (2 * vxy + C2) / ((ux * ux + uy * uy + C1) * (vx + vy + C2))
    return local.flatten(1).mean(1)
