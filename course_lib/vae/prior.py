"""Priors over a VQ-VAE's code grid, so that it can sample (notebook 03, section "Sampling from a VQ-VAE").

The VQ-VAE trains with a uniform prior over codes and learns the real one afterwards: encode the
training images to codes [N, h, w] (``VQVAE.encode_codes``), fit a model P(codes), sample codes
from it and decode them. The paper uses a PixelCNN over the grid; these are two small stand-ins:

* ``IndependentCodePrior``: P(codes) = prod_m pi_m(c_m), one categorical per grid position, fitted
  by counting (the maximum-likelihood estimate, with add-``alpha`` smoothing). It ignores how
  positions depend on each other, so samples mix strokes of different digits: the baseline.
* ``CodePrior``: autoregressive in raster order, P(codes) = prod_m P(c_m | c_<m), with a GRU reading
  the previous codes (a start token first). Not a PixelCNN: one recurrent layer over a 49-token
  sequence for MNIST, trained with ``fit`` on the codes (cross-entropy = -log P). Sampling draws the
  h*w codes one after the other.

Both give ``log_prob(codes) -> [N]`` nats and ``sample(n) -> codes [n, h, w]`` (int64).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.contract import GenerativeModel

__all__ = ["CodePrior", "IndependentCodePrior"]


def _check_codes(codes: Tensor, num_codes: int, grid: tuple[int, int]) -> Tensor:
    if codes.dtype != torch.long or tuple(codes.shape[1:]) != tuple(grid):
        raise TypeError(f"expected codes int64 [N, {grid[0]}, {grid[1]}] (VQVAE.encode_codes), got "
                        f"{codes.dtype} {list(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= num_codes):
        raise ValueError(f"codes must lie in 0..{num_codes - 1}, got {codes.min().item()}..{codes.max().item()}")
    return codes


class IndependentCodePrior(nn.Module):
    """One categorical per grid position: log pi [h*w, K] from smoothed counts."""

    def __init__(self, num_codes: int, grid: tuple[int, int]):
        super().__init__()
        self.num_codes, self.grid = num_codes, tuple(grid)
        self.register_buffer("log_pi", torch.full((grid[0] * grid[1], num_codes), -math.log(num_codes)))

    @torch.no_grad()
    def fit(self, codes: Tensor, alpha: float = 0.5) -> IndependentCodePrior:
        """pi_m(k) = (count of k at m + alpha) / (N + K alpha): the MLE with add-alpha smoothing."""
        codes = _check_codes(codes, self.num_codes, self.grid).flatten(1)  # (N, h*w)
        counts = F.one_hot(codes, self.num_codes).sum(0).float() + alpha  # (h*w, K)
        self.log_pi.copy_(torch.log(counts / counts.sum(1, keepdim=True)))
        return self

    def log_prob(self, codes: Tensor) -> Tensor:
        codes = _check_codes(codes, self.num_codes, self.grid).flatten(1)
        return self.log_pi.gather(1, codes.t()).sum(0)  # (N,)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        idx = torch.multinomial(self.log_pi.exp(), n, replacement=True)  # (h*w, n)
        return idx.t().reshape(n, *self.grid)


class CodePrior(GenerativeModel):
    """P(c_1..c_M) = prod_m softmax(W h_m)[c_m], h_m = GRU(embed(c_{m-1}), h_{m-1}), c_0 = start token."""

    def __init__(self, num_codes: int, grid: tuple[int, int], embed_dim: int = 32, hidden: int = 128):
        super().__init__()
        self.num_codes, self.grid = num_codes, tuple(grid)
        self.embed = nn.Embedding(num_codes + 1, embed_dim)  # index num_codes = the start token
        self.gru = nn.GRU(embed_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_codes)

    def preprocess(self, codes: Tensor) -> Tensor:
        return _check_codes(codes, self.num_codes, self.grid)

    def logits(self, codes: Tensor) -> Tensor:
        """codes [N, h, w] -> logits [N, h*w, K] of P(c_m | c_<m) for every m at once (teacher forcing)."""
        seq = codes.flatten(1)
        start = torch.full_like(seq[:, :1], self.num_codes)
        out, _ = self.gru(self.embed(torch.cat([start, seq[:, :-1]], dim=1)))
        return self.head(out)

    def log_prob(self, codes: Tensor) -> Tensor:
        """log P(codes) [N] in nats."""
        codes = _check_codes(codes, self.num_codes, self.grid)
        return -F.cross_entropy(self.logits(codes).transpose(1, 2), codes.flatten(1), reduction="none").sum(1)

    def loss(self, codes: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        nll = -self.log_prob(codes).mean()
        return {"loss": nll, "nats_per_code": nll / codes[0].numel()}

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """codes [n, h, w], drawn position by position (softmax of logits / temperature)."""
        if y is not None:
            raise ValueError("CodePrior is unconditional: sample it with y=None")
        device = self.head.weight.device
        token = torch.full((n, 1), self.num_codes, dtype=torch.long, device=device)
        h, out = None, []
        for _ in range(self.grid[0] * self.grid[1]):
            hidden, h = self.gru(self.embed(token), h)
            probs = torch.softmax(self.head(hidden[:, -1]) / temperature, dim=-1)
            token = torch.multinomial(probs, 1)
            out.append(token)
        return torch.cat(out, dim=1).view(n, *self.grid)

    def postprocess(self, samples: Tensor) -> Tensor:
        return samples
