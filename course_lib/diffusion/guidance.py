"""Guidance and conditioning for diffusion samplers (notebook 07).

Every sampler in ``ddim`` calls the network through one function, ``eps_fn(x_t, t) -> eps``
(t: int64 [N]). Guidance is a way of building that function, so any guidance works with any
sampler. With eps = -sqrt(1 - alpha_bar_t) grad log p(x_t) (the score, up to a factor):

* classifier-free guidance (Ho & Salimans 2021): the implicit classifier
  p(c | x_t) ~ p(x_t | c) / p(x_t) turns
      grad log p(x_t | c) + w grad log p(c | x_t) = (1 + w) grad log p(x_t | c) - w grad log p(x_t)
  into ``cfg_eps_fn``: eps = (1 + w) eps_theta(x_t, t, c) - w eps_theta(x_t, t, no label).
  One network learns both by seeing the "no label" index for a fraction of the training
  examples (``drop_labels``; ``GaussianDiffusion(label_dropout=...)``).
* classifier guidance (Dhariwal & Nichol 2021): a classifier p_phi(y | x_t, t) trained on noisy
  images (``NoisyClassifier``, ``classifier_loss``). Their Algorithm 2 (DDIM form) is
  ``classifier_guided_eps_fn``: eps_hat = eps - s sqrt(1 - alpha_bar_t) grad log p_phi(y | x_t);
  Algorithm 1 (DDPM form, the mean moved by s Sigma grad log p_phi) is
  ``classifier_guided_ddpm_sample``.
* conditioning on an image by channel concatenation (``ConcatConditioned``): the network sees
  [x_t, image] and the "label" y passed through the samplers is that image.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.nn import timestep_embedding

if TYPE_CHECKING:  # gaussian_diffusion imports drop_labels from here
    from course_lib.diffusion.gaussian_diffusion import GaussianDiffusion

__all__ = [
    "ConcatConditioned",
    "NoisyClassifier",
    "cfg_combine",
    "cfg_eps_fn",
    "classifier_guided_ddpm_sample",
    "classifier_guided_eps_fn",
    "classifier_log_prob_grad",
    "classifier_loss",
    "drop_labels",
]

EpsFn = Callable[[Tensor, Tensor], Tensor]


def cfg_combine(eps_cond: Tensor, eps_uncond: Tensor, w: float) -> Tensor:
    """Classifier-free guidance: (1 + w) eps_cond - w eps_uncond (w = 0: the conditional model)."""
    return (1 + w) * eps_cond - w * eps_uncond


def drop_labels(y: Tensor, p: float, null_label: int, generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by ``null_label`` with probability p (the training half of CFG). y: [N] -> [N]."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the label dropout probability must lie in [0, 1] (got {p}).")
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p
    return torch.where(drop, torch.full_like(y, null_label), y)


def cfg_eps_fn(model: nn.Module, y: Tensor, w: float, null_label: int) -> EpsFn:
    """eps_fn for classifier-free guidance with weight w and labels y [n].

    Both predictions come from one call of ``model`` on a batch of 2n ([x_t; x_t] with [y; null]);
    w = 0 skips the unconditional half.
    """
    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        if w == 0:
            return model(x_t, t, y)
        null = torch.full_like(y, null_label)
        eps_cond, eps_uncond = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        return cfg_combine(eps_cond, eps_uncond, w)

    return eps_fn


class NoisyClassifier(nn.Module):
    """p_phi(y | x_t, t) for 1 x 28 x 28 (or 32 x 32) images: logits [N, num_classes].

    Three stride-2 convolutions (width, 2 width, 2 width channels), each followed by the time
    embedding added per channel and SiLU, then global average pooling and a linear layer. It must
    see noisy images at training time (``classifier_loss``): guidance asks it about x_t, not x_0.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, emb_dim: int = 64):
        super().__init__()
        self.emb_dim = emb_dim
        chans = [in_channels, width, 2 * width, 2 * width]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        self.time = nn.ModuleList(nn.Linear(emb_dim, b) for b in chans[1:])
        self.head = nn.Linear(chans[-1], num_classes)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, self.emb_dim).to(x_t.dtype)  # (N, emb_dim)
        h = x_t
        for conv, time in zip(self.convs, self.time):
            h = F.silu(conv(h) + time(emb)[:, :, None, None])
        return self.head(h.mean(dim=(2, 3)))  # (N, num_classes)


def classifier_loss(diffusion: GaussianDiffusion, classifier: nn.Module, x0: Tensor, y: Tensor) -> dict:
    """Cross-entropy of p_phi(y | x_t, t) on x_t ~ q(x_t | x_0), t ~ Uniform{1..T}: {"loss", "accuracy"}."""
    t = torch.randint(1, diffusion.T + 1, (x0.shape[0],), device=x0.device)
    logits = classifier(diffusion.q_sample(x0, t), t)
    loss = F.cross_entropy(logits, y)
    return {"loss": loss, "accuracy": (logits.argmax(1) == y).float().mean().detach()}


def classifier_log_prob_grad(classifier: nn.Module, x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
    """grad_{x_t} log p_phi(y | x_t, t), by autograd (each example's own log-probability). Like x_t."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        log_p = F.log_softmax(classifier(x, t), dim=1).gather(1, y[:, None]).sum()
        return torch.autograd.grad(log_p, x)[0]


def classifier_guided_eps_fn(eps_fn: EpsFn, classifier: nn.Module, y: Tensor, scale: float,
                             alpha_bars: Tensor) -> EpsFn:
    """Algorithm 2 of Dhariwal & Nichol (2021): eps_hat = eps - s sqrt(1 - alpha_bar_t) grad log p_phi(y | x_t).

    This is the eps of the score grad log p(x_t) + s grad log p_phi(y | x_t), since
    eps = -sqrt(1 - alpha_bar_t) grad log p(x_t). ``alpha_bars``: the [T + 1] schedule.
    """
    def guided(x_t: Tensor, t: Tensor) -> Tensor:
        root = (1 - alpha_bars[t]).sqrt().reshape(-1, *([1] * (x_t.dim() - 1)))
        return eps_fn(x_t, t) - scale * root * classifier_log_prob_grad(classifier, x_t, t, y)

    return guided


@torch.no_grad()
def classifier_guided_ddpm_sample(diffusion: GaussianDiffusion, classifier: nn.Module, y: Tensor | int,
                                  n: int, scale: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Algorithm 1 of Dhariwal & Nichol (2021), all T steps:

        mu, Sigma = mu_theta(x_t), Sigma_theta(x_t);   x_{t-1} ~ N(mu + s Sigma grad log p_phi(y | x_t), Sigma)

    with DDPM's fixed Sigma = sigma_t^2 I. y: labels [n] or one int. Returns x_0 [n, ...] in [-1, 1].
    """
    device = diffusion.alpha_bars.device
    y = torch.full((n,), y, device=device, dtype=torch.long) if isinstance(y, int) else y.to(device)
    was_training = diffusion.training
    diffusion.eval()
    x_t = torch.randn((n, *diffusion.data_shape), generator=generator, device=device)
    for t in range(diffusion.T, 0, -1):
        time = torch.full((n,), t, device=device, dtype=torch.long)
        out = diffusion.p_mean_variance(x_t, time)
        mean = out["mean"] + scale * out["variance"] * classifier_log_prob_grad(classifier, x_t, time, y)
        z = torch.randn(x_t.shape, generator=generator, device=device) if t > 1 else 0.0
        x_t = mean + out["variance"].sqrt() * z
    diffusion.train(was_training)
    return x_t.clamp(-1.0, 1.0)


class ConcatConditioned(nn.Module):
    """eps_theta(x_t, t, image) = net([x_t, image], t): conditioning on an image by channel concatenation.

    ``net`` is a U-Net built with in_channels = C + C_cond and out_channels = C; the condition
    ([N, C_cond, H, W], e.g. a blurred or masked copy of x_0) is passed wherever a sampler or the
    loss takes the label y, so ``GaussianDiffusion`` and the samplers need no change.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None or y.dim() != x_t.dim() or y.shape[0] != x_t.shape[0] or y.shape[2:] != x_t.shape[2:]:
            got = None if y is None else list(y.shape)
            raise ValueError(f"ConcatConditioned needs the condition image as y, shaped [N, C_cond, "
                             f"{', '.join(map(str, x_t.shape[2:]))}] like x_t {list(x_t.shape)}; got {got}.")
        return self.net(torch.cat([x_t, y], dim=1), t)
