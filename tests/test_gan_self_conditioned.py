"""k-means for the self-conditioned GAN: the optimum by brute force on a tiny set, Lloyd's fixed point, blobs."""
import itertools

import pytest
import torch

from course_lib.gan.self_conditioned import cluster_prior, kmeans


def _sse(x, labels, k):
    return sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in range(k) if (labels == c).any())


def test_kmeans_reaches_the_brute_force_optimum_on_a_tiny_set():
    """Nine 2D points, k = 3: every assignment of the points to 3 clusters is enumerated (3^9); the best of
    a few seeds of kmeans has the minimal sum of squared distances."""
    x = torch.tensor([[0.0, 0.0], [0.3, 0.1], [2.0, 2.1], [2.4, 1.8], [2.2, 2.5],
                      [4.0, 0.0], [4.3, 0.4], [3.8, 0.2], [1.0, 1.1]], dtype=torch.float64)
    best = min(_sse(x, torch.tensor(a), 3) for a in itertools.product(range(3), repeat=len(x)))
    found = min(_sse(x, kmeans(x, 3, seed=s)[0], 3) for s in range(5))
    assert found.item() == pytest.approx(best.item(), rel=1e-6)


def test_kmeans_ends_at_lloyds_fixed_point_and_separates_blobs():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    truth = torch.arange(400) % 4
    x = centres[truth] + 0.3 * torch.randn(400, 3, generator=gen)
    labels, centroids = kmeans(x, 4, seed=1)
    assert torch.equal(torch.cdist(x, centroids).argmin(1), labels)  # each point nearest its own centroid
    for c in range(4):
        torch.testing.assert_close(centroids[c], x[labels == c].mean(0))  # each centroid the mean of its points
    pairs = set(zip(truth.tolist(), labels.tolist()))
    assert len(pairs) == 4  # the same partition up to renaming
    pi = cluster_prior(labels, 4)
    assert pi.sum().item() == pytest.approx(1) and torch.allclose(pi, torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="1 <= k <= N"):
        kmeans(x[:3], 4)
