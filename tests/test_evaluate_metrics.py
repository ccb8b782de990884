"""FID, KID, precision/recall and mode coverage against independent computations."""
import numpy as np
import pytest
import scipy.linalg
import torch

from course_lib.evaluate import frechet_distance, kid, mmd2_unbiased, mode_coverage, precision_recall


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real  # the textbook formula tr((S_a S_b)^1/2)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def test_fid_of_identical_sets_is_zero():
    f = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_matches_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    d = 6
    a = rng.normal(size=(200, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(150, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    ours = frechet_distance(torch.tensor(a), torch.tensor(b))
    assert ours == pytest.approx(_scipy_fid(a, b), rel=1e-6, abs=1e-8)
    assert ours > 0.1


def test_fid_known_gaussians():
    # FD of N(0, I) vs N(m, 4I) in d dims is |m|^2 + d(1 + 4 - 2*2) = |m|^2 + d; large samples approach it.
    g = torch.Generator().manual_seed(0)
    d = 4
    a = torch.randn(200000, d, generator=g)
    b = 2 * torch.randn(200000, d, generator=g) + 1.0
    assert frechet_distance(a, b) == pytest.approx(d + d, rel=0.02)


def _brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(15, 5)), rng.normal(size=(12, 5)) + 0.5
    assert mmd2_unbiased(torch.tensor(x), torch.tensor(y)) == pytest.approx(_brute_force_mmd2(x, y), rel=1e-10)


def test_kid_is_unbiased_for_equal_distributions():
    # Many independent small sets from the same distribution: the unbiased estimate averages to 0
    # (within its standard error), while the biased estimate (diagonal kept) is clearly positive.
    g = torch.Generator().manual_seed(0)
    m, reps, d = 8, 3000, 4
    x = torch.randn(reps, m, d, generator=g, dtype=torch.float64)
    y = torch.randn(reps, m, d, generator=g, dtype=torch.float64)
    unbiased = torch.tensor([mmd2_unbiased(x[r], y[r]) for r in range(reps)])
    k = lambda a, b: (a @ b.transpose(-1, -2) / d + 1) ** 3
    biased = k(x, x).mean((1, 2)) + k(y, y).mean((1, 2)) - 2 * k(x, y).mean((1, 2))
    se = unbiased.std() / reps ** 0.5
    assert abs(unbiased.mean()) < 4 * se
    assert biased.mean() > 10 * se


def test_kid_subsets_report_mean_and_error():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 1
    out = kid(a, b, num_subsets=20, subset_size=100)
    assert out["kid_subset_size"] == 100 and out["kid"] > 10 * out["kid_se"] > 0
    assert abs(kid(a, a.flip(0), num_subsets=20, subset_size=100)["kid"]) < out["kid"] / 50


def test_precision_recall_constructed_cases():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g)
    same = precision_recall(a, a.clone())
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    far = precision_recall(a, a + 100.0)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # mode collapse: samples only from the region near one real point -> high precision, low recall
    collapsed = a[:1] + 0.01 * torch.randn(300, 5, generator=g)
    pr = precision_recall(a, collapsed)
    assert pr["precision"] > 0.9 and pr["recall"] < 0.1


def test_mode_coverage_one_class_and_uniform():
    one = torch.zeros(100, 10)
    one[:, 3] = 10.0
    out = mode_coverage(one)
    assert out["classes_covered"] == 1 and out["label_histogram"][3] == 100 and out["label_entropy_bits"] == 0.0
    assert out["confidence"] == pytest.approx(np.exp(10) / (np.exp(10) + 9))
    balanced = torch.eye(10).repeat(10, 1) * 5
    out = mode_coverage(balanced)
    assert out["classes_covered"] == 10 and out["label_entropy_bits"] == pytest.approx(np.log2(10))


def test_metrics_refuse_too_few_or_bad_features():
    with pytest.raises(ValueError, match="at least 4"):
        precision_recall(torch.randn(3, 2), torch.randn(10, 2), k=3)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.randn(1, 2), torch.randn(10, 2))
    with pytest.raises(ValueError, match="NaN"):
        kid(torch.full((5, 2), float("nan")), torch.randn(5, 2))


def test_kid_on_whole_sets_reports_no_fake_error_bar():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g)
    out = kid(a, b, num_subsets=10, subset_size=100)
    assert out["kid"] == pytest.approx(mmd2_unbiased(a.double(), b.double()))
    assert np.isnan(out["kid_se"]) and out["kid_subset_size"] == 50
