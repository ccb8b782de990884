"""Sample-quality metrics on feature vectors (here: the MNIST classifier's 128 features).

All functions take features ``[N, d]`` of real images and of generated images.

* Fréchet distance (FID when the features are Inception's; "classifier-FID" here): fit a Gaussian
  to each set, N(mu_r, S_r) and N(mu_g, S_g), and return the squared 2-Wasserstein distance

      FD = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r^1/2 S_g S_r^1/2)^1/2).

  The matrix square roots are taken by symmetric eigendecomposition in float64 (eigenvalues
  clipped at 0), which is stable where a general ``sqrtm`` returns complex noise.
* KID: the squared maximum mean discrepancy with the kernel k(a, b) = (a.b / d + 1)^3, estimated
  without bias (diagonal terms left out) on random subsets; mean and standard error over subsets.
  Unlike FD it is unbiased, so it can be compared across sample sizes and can be slightly negative.
* Precision / recall (Kynkäänniemi et al., 2019): the real manifold is the union of balls around
  each real feature with radius the distance to its k-th nearest real neighbour. Precision = the
  fraction of generated samples inside it (are samples realistic?); recall = the fraction of real
  samples inside the generated manifold (is the data's variety covered?).
* Mode coverage: the classifier's label histogram of the samples, its mean confidence, and how
  many classes get a fair share.
"""
from __future__ import annotations

import math

import torch

__all__ = ["frechet_distance", "kid", "mmd2_unbiased", "precision_recall", "mode_coverage"]


def _check_features(f: torch.Tensor, name: str, min_rows: int, metric: str) -> torch.Tensor:
    if f.dim() != 2:
        raise ValueError(f"{metric}: {name} must be features [N, d], got shape {tuple(f.shape)}.")
    if f.shape[0] < min_rows:
        raise ValueError(f"{metric} needs at least {min_rows} {name} rows, got {f.shape[0]}: draw more samples.")
    if not torch.isfinite(f).all():
        raise ValueError(f"{metric}: {name} contain NaN or inf; check the samples fed to the classifier.")
    return f.double()


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via eigh (negative eigenvalues -> 0)."""
    evals, evecs = torch.linalg.eigh((s + s.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance(f_real: torch.Tensor, f_gen: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to ``f_real`` [N, d] and ``f_gen`` [M, d]."""
    f_real = _check_features(f_real, "real features", 2, "frechet_distance")
    f_gen = _check_features(f_gen, "generated features", 2, "frechet_distance")
    mu_r, mu_g = f_real.mean(0), f_gen.mean(0)
    s_r, s_g = torch.cov(f_real.T), torch.cov(f_gen.T)  # [d, d], unbiased (N - 1)
    root_r = _sqrtm_psd(s_r)
    # tr((S_r^1/2 S_g S_r^1/2)^1/2) = sum of square roots of the eigenvalues of a symmetric PSD matrix
    middle = root_r @ s_g @ root_r
    evals = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0)
    fd = (mu_r - mu_g).pow(2).sum() + s_r.trace() + s_g.trace() - 2 * evals.sqrt().sum()
    return max(fd.item(), 0.0)


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_unbiased(f_x: torch.Tensor, f_y: torch.Tensor) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel between two sets [m, d] and [n, d]."""
    m, n = f_x.shape[0], f_y.shape[0]
    k_xx, k_yy, k_xy = _poly_kernel(f_x, f_x), _poly_kernel(f_y, f_y), _poly_kernel(f_x, f_y)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return (term_xx + term_yy - 2 * k_xy.mean()).item()


def kid(f_real: torch.Tensor, f_gen: torch.Tensor, num_subsets: int = 50, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> dict:
    """Kernel inception distance on the classifier's features: mean of ``mmd2_unbiased`` over subsets.

    Each subset draws ``subset_size`` rows (without replacement) from each set; the size is capped
    at the smaller set. Returns ``{"kid", "kid_std", "kid_se", "kid_subset_size"}``: ``kid_se`` =
    std / sqrt(num_subsets) is the Monte Carlo error of the subset average (subsets share rows, so
    it does not include the sampling error of the finite sets themselves). When both sets have
    ``subset_size`` rows or fewer, all subsets would be the same two sets: KID is computed once
    and ``kid_std``/``kid_se`` are NaN (use disjoint repeats to get an error bar).
    """
    f_real = _check_features(f_real, "real features", 2, "kid")
    f_gen = _check_features(f_gen, "generated features", 2, "kid")
    size = min(subset_size, f_real.shape[0], f_gen.shape[0])
    if size == f_real.shape[0] == f_gen.shape[0]:  # every "subset" is the whole of both sets
        return {"kid": mmd2_unbiased(f_real, f_gen), "kid_std": float("nan"), "kid_se": float("nan"),
                "kid_subset_size": size}
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    values = []
    for _ in range(num_subsets):
        i = torch.randperm(f_real.shape[0], generator=generator)[:size].to(f_real.device)
        j = torch.randperm(f_gen.shape[0], generator=generator)[:size].to(f_gen.device)
        values.append(mmd2_unbiased(f_real[i], f_gen[j]))
    v = torch.tensor(values, dtype=torch.float64)
    std = v.std().item() if num_subsets > 1 else float("nan")
    return {"kid": v.mean().item(), "kid_std": std, "kid_se": std / math.sqrt(num_subsets),
            "kid_subset_size": size}


def _kth_neighbour_radius(f: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """[N] distance from each row of ``f`` to its k-th nearest other row."""
    radii = []
    for start in range(0, f.shape[0], chunk):
        d = torch.cdist(f[start:start + chunk], f)  # [chunk, N]; the point itself is at distance 0
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside_fraction(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> float:
    """Fraction of ``points`` inside at least one ball (``centres`` [M, d], ``radii`` [M])."""
    inside = 0
    for start in range(0, points.shape[0], chunk):
        d = torch.cdist(points[start:start + chunk], centres)  # [chunk, M]
        inside += (d <= radii[None, :]).any(1).sum().item()
    return inside / points.shape[0]


def precision_recall(f_real: torch.Tensor, f_gen: torch.Tensor, k: int = 3) -> dict:
    """Improved precision and recall with k-NN manifolds; returns ``{"precision", "recall", "pr_k"}``."""
    f_real = _check_features(f_real, "real features", k + 1, "precision_recall")
    f_gen = _check_features(f_gen, "generated features", k + 1, "precision_recall")
    r_real = _kth_neighbour_radius(f_real, k)
    r_gen = _kth_neighbour_radius(f_gen, k)
    return {"precision": _inside_fraction(f_gen, f_real, r_real),
            "recall": _inside_fraction(f_real, f_gen, r_gen), "pr_k": k}


def mode_coverage(logits: torch.Tensor, min_share: float = 0.1) -> dict:
    """Label histogram, confidence and the number of classes covered, from classifier logits [N, K].

    A class counts as covered when it receives at least ``min_share`` of its uniform share
    (default 0.1: at least 1% of the samples for 10 classes), so a few stray samples do not count.
    ``label_entropy_bits`` is log2(K) for perfectly balanced labels and 0 for a single class.
    """
    if logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"mode_coverage needs logits [N, K] with N >= 1, got shape {tuple(logits.shape)}.")
    probs = logits.double().softmax(1)
    n, num_classes = probs.shape
    counts = torch.bincount(probs.argmax(1), minlength=num_classes)
    share = counts.double() / n
    entropy = -(share[share > 0] * share[share > 0].log2()).sum().item()
    return {
        "confidence": probs.max(1).values.mean().item(),
        "label_histogram": counts.tolist(),
        "classes_covered": int((share >= min_share / num_classes).sum()),
        "label_entropy_bits": entropy,
    }
