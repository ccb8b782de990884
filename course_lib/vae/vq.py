"""Vector quantisation for the VQ-VAE (van den Oord et al. 2017, "Neural discrete representation learning"; notebook 03).

A codebook holds K vectors e_1..e_K in R^D. The encoder outputs z_e(x), one D-vector per position
of a grid; each is replaced by its nearest code::

    k = argmin_j ||z_e(x) - e_j||_2,      z_q(x) = e_k

argmin has no gradient, so the decoder's gradient with respect to z_q is copied to z_e (the
*straight-through* estimator): in code ``z_e + sg[z_q - z_e]``, whose value is z_q and whose
gradient is the identity (``sg`` = stop-gradient = ``.detach()``). The codebook and the encoder
are pulled together by the two extra terms of the lecture's loss::

    L = -log p(x | z_q(x)) + ||sg[z_e(x)] - e||_2^2 + beta ||z_e(x) - sg[e]||_2^2
                               codebook loss         commitment loss (beta = 0.25 in the paper)

The first moves the chosen codes towards the encoder outputs, the second keeps the encoder
committed to its codes. Here each norm is summed over the positions of the grid (one example's
value, like the reconstruction term) and averaged over the batch.

Codebook health, reported every step: the *perplexity* exp(-sum_k p_k log p_k) of the batch's
code frequencies p_k (K if all codes are used equally, 1 if one code takes all) and the fraction
of codes used. A code that no encoder output chooses gets no gradient and stays *dead*; the
quantiser counts the training steps since each code was last chosen and ``reset_dead_codes``
moves codes unused for ``dead_after`` steps onto randomly chosen encoder outputs of the batch.

Shapes: z_e, z_q [N, D, h, w]; codes [N, h, w] (int64 in 0..K-1); per-example losses [N].
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.vae.likelihoods import get_likelihood
from course_lib.vae.networks import check_image_shape, conv_decoder, conv_encoder

__all__ = ["VQVAE", "VectorQuantizer", "nearest_code", "perplexity", "straight_through", "vq_losses"]


def nearest_code(z_e: Tensor, codebook: Tensor) -> Tensor:
    """argmin_j ||z_e - e_j||^2 for rows z_e [M, D] and a codebook [K, D] -> indices [M] (int64).

    ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2: one matrix product instead of an [M, K, D] difference.
    """
    distances = (z_e ** 2).sum(1, keepdim=True) - 2 * z_e @ codebook.t() + (codebook ** 2).sum(1)  # (M, K)
    return distances.argmin(dim=1)


def straight_through(z_e: Tensor, z_q: Tensor) -> Tensor:
    """z_e + sg[z_q - z_e]: the value of z_q, the gradient of z_e (it passes to z_e unchanged)."""
    return z_e + (z_q - z_e).detach()


def vq_losses(z_e: Tensor, z_q: Tensor) -> tuple[Tensor, Tensor]:
    """(codebook, commitment), each [N]: ||sg[z_e] - e||^2 and ||z_e - sg[e]||^2 summed over all but the batch axis."""
    codebook = ((z_e.detach() - z_q) ** 2).flatten(1).sum(1)  # gradient reaches the codes only
    commitment = ((z_e - z_q.detach()) ** 2).flatten(1).sum(1)  # gradient reaches the encoder only
    return codebook, commitment


def perplexity(codes: Tensor, num_codes: int) -> Tensor:
    """exp(entropy) of the code frequencies in ``codes`` (any shape): between 1 and ``num_codes``."""
    p = torch.bincount(codes.flatten(), minlength=num_codes).float() / codes.numel()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class VectorQuantizer(nn.Module):
    """K codes of dimension D, nearest-code quantisation with the straight-through gradient, dead-code resets."""

    def __init__(self, num_codes: int = 128, code_dim: int = 16, dead_after: int = 100):
        super().__init__()
        if num_codes < 2 or code_dim < 1:
            raise ValueError(f"need num_codes >= 2 and code_dim >= 1, got {num_codes} and {code_dim}")
        self.num_codes, self.code_dim, self.dead_after = num_codes, code_dim, dead_after
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes))
        # training steps since each code was last chosen (saved in checkpoints, copied to the EMA model)
        self.register_buffer("steps_unused", torch.zeros(num_codes, dtype=torch.long))

    def codes(self, z_e: Tensor) -> Tensor:
        """z_e [N, D, h, w] -> codes [N, h, w]."""
        n, d, h, w = z_e.shape
        if d != self.code_dim:
            raise ValueError(f"z_e has {d} channels, the codebook has vectors of dimension {self.code_dim}")
        return nearest_code(z_e.permute(0, 2, 3, 1).reshape(-1, d), self.codebook).view(n, h, w)

    def lookup(self, codes: Tensor) -> Tensor:
        """codes [N, h, w] -> z_q [N, D, h, w] (the code vectors e_k)."""
        if codes.dtype != torch.long or codes.min() < 0 or codes.max() >= self.num_codes:
            raise ValueError(f"codes must be int64 in 0..{self.num_codes - 1}")
        return self.codebook[codes].permute(0, 3, 1, 2)

    def forward(self, z_e: Tensor) -> dict[str, Tensor]:
        """{"z_q": straight-through z_q [N, D, h, w], "codes", "codebook_loss" [N], "commitment_loss" [N],
        "perplexity", "codes_used" (fraction of the K codes in this batch)}; counts unused steps when training."""
        codes = self.codes(z_e)
        z_q = self.lookup(codes)
        codebook_loss, commitment_loss = vq_losses(z_e, z_q)
        used = torch.bincount(codes.flatten(), minlength=self.num_codes) > 0
        if self.training:
            with torch.no_grad():
                self.steps_unused.add_(1).masked_fill_(used, 0)
        return {"z_q": straight_through(z_e, z_q), "codes": codes, "codebook_loss": codebook_loss,
                "commitment_loss": commitment_loss, "perplexity": perplexity(codes, self.num_codes),
                "codes_used": used.float().mean()}

    @torch.no_grad()
    def reset_dead_codes(self, z_e: Tensor) -> int:
        """Move every code unused for ``dead_after`` training steps onto a random encoder output of
        z_e [N, D, h, w] (the global generator, on z_e's device); returns how many were moved."""
        if not self.dead_after:  # 0 turns the resets off
            return 0
        dead = (self.steps_unused >= self.dead_after).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        vectors = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        pick = torch.randint(0, vectors.shape[0], (dead.numel(),), device=vectors.device)
        self.codebook[dead] = vectors[pick].to(self.codebook.dtype)
        self.steps_unused[dead] = 0
        return int(dead.numel())


class VQVAE(GenerativeModel):
    """The VQ-VAE's first stage: conv encoder -> z_e [N, D, H/4, W/4] -> nearest codes -> conv decoder.

    ``loss`` is the lecture's L per example, averaged: "recon" (-log p(x | z_q), the decoder's likelihood
    as in ``VAE``) + "codebook" + beta * "commitment"; it also logs "perplexity", "codes_used" and, in
    ``train_step``, "dead_codes_reset". It has no prior over codes, so it cannot sample on its own (the
    contract's default ``sample``): fit a ``course_lib.vae.prior`` model to ``encode_codes(x)`` and use
    ``course_lib.vae.model.VQVAESampler``. With a prior P(codes), -log p(x) <= recon - log P(codes)
    (``nll_bound``; q(codes | x) is one-hot, so its KL to the prior is -log P(codes)).
    """

    def __init__(self, image_shape=(1, 28, 28), num_codes: int = 128, code_dim: int = 16, channels: int = 32,
                 decoder: str = "bernoulli", beta: float = 0.25, dead_after: int = 100):
        super().__init__()
        c, h, w = check_image_shape(image_shape)
        self.image_shape, self.grid, self.beta = (c, h, w), (h // 4, w // 4), float(beta)
        self.likelihood = get_likelihood(decoder)
        self.encoder_net = nn.Sequential(conv_encoder(c, channels), nn.Conv2d(2 * channels, code_dim, 1))
        self.quantizer = VectorQuantizer(num_codes, code_dim, dead_after)
        self.decoder_net = nn.Sequential(nn.Conv2d(code_dim, 2 * channels, 3, padding=1), nn.SiLU(),
                                         conv_decoder(self.likelihood.out_channels(c), channels))

    def preprocess(self, x: Tensor) -> Tensor:
        """uint8 -> the decoder's input space ({0, 1} drawn per batch, or [-1, 1]); floats are checked."""
        return self.likelihood.preprocess(x) if x.dtype == torch.uint8 else self.likelihood.check(x)

    def postprocess(self, samples: Tensor) -> Tensor:
        return self.likelihood.postprocess(samples)

    def encode(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] -> z_e [N, D, H/4, W/4] (continuous, before quantisation)."""
        return self.encoder_net(x)

    def encode_codes(self, x: Tensor) -> Tensor:
        """x (uint8 images or the model's input) -> codes [N, H/4, W/4], int64."""
        return self.quantizer.codes(self.encode(self.preprocess(x)))

    def decode(self, z_q: Tensor) -> Tensor:
        """z_q [N, D, h, w] -> x_hat [N, C, H, W], the decoder's mean in the input space."""
        return self.likelihood.mean(self.decoder_net(z_q))

    def decode_codes(self, codes: Tensor) -> Tensor:
        """codes [N, h, w] -> x_hat [N, C, H, W]."""
        return self.decode(self.quantizer.lookup(codes))

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        if y is not None:
            raise ValueError("the VQ-VAE is unconditional: train it without --conditional labels")
        vq = self.quantizer(self.encode(x))
        recon = -self.likelihood.log_prob(x, self.decoder_net(vq["z_q"])).mean()
        codebook, commitment = vq["codebook_loss"].mean(), vq["commitment_loss"].mean()
        return {"loss": recon + codebook + self.beta * commitment, "recon": recon, "codebook": codebook,
                "commitment": commitment, "perplexity": vq["perplexity"], "codes_used": vq["codes_used"]}

    def train_step(self, x, y, step, update):
        terms = super().train_step(x, y, step, update)
        q, reset = self.quantizer, 0
        if q.dead_after and bool((q.steps_unused >= q.dead_after).any()):  # encode again only when needed
            with torch.no_grad():
                reset = q.reset_dead_codes(self.encode(x))
        return {**terms, "dead_codes_reset": reset}

    @torch.no_grad()
    def nll_bound(self, x: Tensor, code_log_prob=None) -> Tensor:
        """-log p(x) <= -log p(x | z_q) - log P(codes), [N] nats; ``code_log_prob(codes) -> [N]`` is the
        prior's (default: uniform over the K codes at each position, -log P = h w log K)."""
        x = self.preprocess(x)
        codes = self.quantizer.codes(self.encode(x))
        recon = -self.likelihood.log_prob(x, self.decoder_net(self.quantizer.lookup(codes)))
        if code_log_prob is None:
            return recon + math.prod(self.grid) * math.log(self.quantizer.num_codes)
        return recon - code_log_prob(codes)
