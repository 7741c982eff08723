"""Image-quality metrics: per-image PSNR / SSIM / L1, and set-level FID and U-IDS / P-IDS from features.

Per-image metrics take `output` and `target` float (B, 3, H, W) in [-1, 1] and return one value per image
(a float64 numpy array (B,)); `hole` is float or bool (B, 1, H, W), 1 = hole. Set-level metrics take feature
matrices (N, D). The networks that make features: fid.py (Inception) and identity.py (SFace, dlib) beside this module,
models/perceptual.py (ST-LPIPS); evaluate.py ties them together.
"""

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from faceinpaint.errors import InpaintError

# Hole-ratio bins of the per-bin tables (fraction of the image that is hole); the last catches very large holes.
HOLE_BINS = {"0-20%": (0.0, 0.2), "20-40%": (0.2, 0.4), "40-60%": (0.4, 0.6), "60-100%": (0.6, 1.01)}
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5  # Wang et al. 2004, the window every inpainting paper reports
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _to_255(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 255] float64, quantised to the uint8 values a saved PNG would hold."""
    return ((images.detach().double().clamp(-1.0, 1.0) + 1.0) * 127.5).round()


def psnr(output: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """PSNR in dB over the whole image on the 0-255 scale; identical images give +inf."""
    mse = (_to_255(output) - _to_255(target)).pow(2).flatten(1).mean(dim=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse.cpu().numpy())


def _gaussian_kernel(device: torch.device) -> torch.Tensor:
    """The 1-D Gaussian (11,) whose outer product is the SSIM window (applied separably: rows, then columns)."""
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    return kernel / kernel.sum()


def ssim(output: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Mean SSIM (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, range 255), averaged over R, G, B.

    Only windows that lie fully inside the image count (no padding), as in scikit-image's
    `structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)`.
    """
    if min(output.shape[-2:]) < SSIM_WINDOW:
        raise InpaintError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    x, y = _to_255(output).float(), _to_255(target).float()  # float32: ~10x faster convs, error < 1e-5
    kernel = _gaussian_kernel(x.device).float()
    rows, columns = kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1)

    def blur(values: torch.Tensor) -> torch.Tensor:
        if values.device.type == "cpu":  # OpenCV's separable filter is ~50x faster than torch's depthwise conv here
            taps, half = kernel.numpy(), SSIM_WINDOW // 2
            planes = [cv2.sepFilter2D(v, -1, taps, taps) for v in values.permute(0, 2, 3, 1).contiguous().numpy()]
            return torch.from_numpy(np.stack(planes)[:, half:-half, half:-half]).permute(0, 3, 1, 2)
        return F.conv2d(F.conv2d(values, rows, groups=3), columns, groups=3)  # valid windows only

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * 255.0) ** 2, (SSIM_K2 * 255.0) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1).cpu().numpy()


def psnr_hole(output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> np.ndarray:
    """PSNR in dB over the hole pixels only (0-255 scale): what inpainting changes, undiluted by the kept pixels.

    NaN for an empty hole, +inf where the hole is reproduced exactly.
    """
    weight = hole.double().expand_as(output)
    squared = (_to_255(output) - _to_255(target)).pow(2)
    total = weight.flatten(1).sum(dim=1)
    mse = ((squared * weight).flatten(1).sum(dim=1) / total).cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


def l1(output: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Mean absolute error on the [0, 1] scale over the whole image."""
    return ((_to_255(output) - _to_255(target)).abs() / 255.0).flatten(1).mean(dim=1).cpu().numpy()


def l1_hole(output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> np.ndarray:
    """Mean absolute error on the [0, 1] scale over the hole pixels only (NaN for an empty hole)."""
    weight = hole.double().expand_as(output)
    error = (_to_255(output) - _to_255(target)).abs() / 255.0
    total = weight.flatten(1).sum(dim=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((error * weight).flatten(1).sum(dim=1) / total).cpu().numpy()


def hole_ratio(hole: torch.Tensor) -> np.ndarray:
    """Fraction of each mask (B, 1, H, W) that is hole, in [0, 1]."""
    return hole.double().flatten(1).mean(dim=1).cpu().numpy()


def hole_bin(ratio: float) -> str:
    """The name of the HOLE_BINS bin a hole ratio falls in."""
    for name, (low, high) in HOLE_BINS.items():
        if low <= ratio < high:
            return name
    raise ValueError(f"hole ratio {ratio} is outside [0, 1]")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance of two Gaussians: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    # tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)): the same eigenvalues, but a symmetric
    # matrix, so two eigh calls replace a general sqrtm (seconds instead of tens of seconds at 2048 dimensions).
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    product = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0.0, None)).sum()
    difference = mu1 - mu2
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of a feature matrix (N, D), in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise InpaintError(f"FID needs at least 2 feature vectors, got an array of shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D): the Frechet distance of their Gaussian fits."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def inception_discriminative_scores(real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
    """MAT's (Zhao et al. 2021) U-IDS and P-IDS from paired Inception features (N, D) of real and completed images.

    A linear SVM is fitted to tell real (1) from fake (0) on all 2N vectors and scored on the same vectors.
    U-IDS = its misclassification rate (0.5 = indistinguishable); P-IDS = the fraction of pairs where the fake's
    decision value exceeds its own real image's (0.5 at best, 0 when every fake is spotted).
    """
    from sklearn.svm import LinearSVC

    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.shape != fake.shape or real.shape[0] < 2:
        raise InpaintError(f"U-IDS / P-IDS need >= 2 paired feature vectors, got {real.shape} and {fake.shape}")
    svm = LinearSVC(dual=False)
    svm.fit(np.concatenate([real, fake]), np.concatenate([np.ones(len(real)), np.zeros(len(fake))]))
    real_score, fake_score = svm.decision_function(real), svm.decision_function(fake)
    u_ids = 0.5 * (float(np.mean(real_score < 0)) + float(np.mean(fake_score > 0)))
    p_ids = float(np.mean(fake_score > real_score))
    return u_ids, p_ids
