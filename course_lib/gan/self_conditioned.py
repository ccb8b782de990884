"""A self-conditioned GAN: an unconditional GAN trained as a conditional one on clusters of its data.

Liu et al. (2020, "Diverse image generation via self-conditioned GANs") give a GAN the structure a
conditional GAN gets from labels, without labels: cluster the training images, train G(z, c) and
D(x, c) on the cluster c of each image, and sample

    c ~ pi (the clusters' shares of the data),  z ~ N(0, I),  x = G(z, c),

so p_g(x) = sum_c pi_c p_g(x | c) is still a model of p_data(x) alone. Each cluster is a smaller,
more uniform target, which helps G cover every mode and D judge each one. The paper re-clusters
periodically on D's features; here the clusters come once, from k-means on the pixels (a simpler
variant; notebook 04 measures what it buys on MNIST).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kmeans", "cluster_prior"]


def kmeans(x: Tensor, k: int, iters: int = 50, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Lloyd's algorithm with k-means++ seeding: x [N, D] (float) -> (labels [N] long, centroids [k, D]).

    Minimises sum_i ||x_i - mu_{c_i}||^2: alternately assign each point to its nearest centroid and move each
    centroid to the mean of its points, until no assignment changes (or ``iters`` rounds). k-means++ picks
    the first centroid uniformly and each next one with probability proportional to the squared distance
    to the nearest centroid so far (Arthur & Vassilvitskii 2007). An emptied cluster is re-seeded at the
    point farthest from its centroid.
    """
    if x.dim() != 2 or not 1 <= k <= len(x):
        raise ValueError(f"kmeans needs x of shape [N, D] and 1 <= k <= N; got shape {tuple(x.shape)} and k = {k}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    x = x.float()
    centroids = x[torch.randint(len(x), (1,), generator=gen, device=x.device)]
    while len(centroids) < k:
        d2 = torch.cdist(x, centroids).pow(2).min(dim=1).values  # [N]
        centroids = torch.cat([centroids, x[torch.multinomial(d2 / d2.sum(), 1, generator=gen)]])
    labels = None
    for _ in range(iters):
        d2 = torch.cdist(x, centroids).pow(2)  # [N, k]
        new = d2.argmin(dim=1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k)
        for c in torch.nonzero(counts == 0).flatten().tolist():  # re-seed an empty cluster
            far = d2.gather(1, labels[:, None]).squeeze(1).argmax()
            labels[far] = c
        counts = torch.bincount(labels, minlength=k).clamp_min(1)
        centroids = torch.zeros_like(centroids).index_add_(0, labels, x) / counts[:, None]
    return labels, centroids


def cluster_prior(labels: Tensor, k: int) -> Tensor:
    """pi [k]: the share of the data in each cluster, the distribution from which sampling draws c."""
    return torch.bincount(labels, minlength=k).float() / len(labels)
