"""PatchGAN discriminator (Isola et al. 2017) and a small CycleGAN (Zhu et al. 2017) for 28x28 images.

PatchGAN: a fully convolutional D that outputs a map of logits, one per overlapping image patch;
each logit sees only its receptive field, so D judges local texture and the adversarial loss is
the mean over patches. ``receptive_field()`` gives the patch size from the layers (r <- (r - 1) s + k,
from the output back to the input).

CycleGAN translates between two unpaired domains A and B with generators G_AB: A -> B and
G_BA: B -> A, discriminators D_A and D_B, and the objective of the lecture

    L = L_GAN(G_AB, D_B) + L_GAN(G_BA, D_A) + lambda_cyc (||G_BA(G_AB(a)) - a||_1 + ||G_AB(G_BA(b)) - b||_1)
        + lambda_id (||G_BA(a) - a||_1 + ||G_AB(b) - b||_1)       (identity term, optional)

Data come as (x, y) with y = 0 for images of A and y = 1 for images of B (any mix in a batch), so
``fit`` trains it like any model. It translates (``translate``) but cannot sample from noise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.gan.losses import discriminator_loss, generator_loss_non_saturating

__all__ = ["PatchDiscriminator", "TranslationGenerator", "CycleGAN", "build_cyclegan"]


class PatchDiscriminator(nn.Module):
    """images [N, C, H, W] -> patch logits [N, 1, H/4, W/4]: two stride-2 4x4 convolutions and a 3x3 output
    convolution; each logit sees an 18x18 patch (pix2pix's 70x70 design scaled down to 28x28 images).
    No normalisation layer: instance normalisation would make every logit depend on the whole image
    through the feature statistics (tests/test_gan.py checks the patch by autograd)."""

    def __init__(self, channels: int = 1, base: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, base, 4, 2, 1), nn.LeakyReLU(0.2),                                          # H/2
            nn.Conv2d(base, 2 * base, 4, 2, 1), nn.LeakyReLU(0.2),                                          # H/4
            nn.Conv2d(2 * base, 1, 3, 1, 1))                                                                  # H/4

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(x)

    def receptive_field(self) -> int:
        """Side of the input patch one output logit sees: r = 1, then r <- (r - 1) * stride + kernel, last layer first."""
        r = 1
        for layer in reversed([m for m in self.net if isinstance(m, nn.Conv2d)]):
            r = (r - 1) * layer.stride[0] + layer.kernel_size[0]
        return r


class TranslationGenerator(nn.Module):
    """image -> image of the same shape: downsample once, residual blocks, upsample (a small CycleGAN generator)."""

    def __init__(self, channels: int = 1, base: int = 32, blocks: int = 2):
        super().__init__()
        norm = lambda c: nn.InstanceNorm2d(c, affine=True)  # noqa: E731
        self.down = nn.Sequential(nn.Conv2d(channels, base, 3, 1, 1), norm(base), nn.ReLU(),
                                  nn.Conv2d(base, 2 * base, 4, 2, 1), norm(2 * base), nn.ReLU())        # H/2
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(2 * base, 2 * base, 3, 1, 1), norm(2 * base), nn.ReLU(),
                                                  nn.Conv2d(2 * base, 2 * base, 3, 1, 1), norm(2 * base))
                                    for _ in range(blocks))
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * base, base, 4, 2, 1), norm(base), nn.ReLU(),      # H
                                nn.Conv2d(base, channels, 3, 1, 1), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        h = self.down(x)
        for block in self.blocks:
            h = h + block(h)
        return self.up(h)


class CycleGAN(GenerativeModel):
    """Two generators and two PatchGAN discriminators; optimizers "G" (both generators) and "D" (both critics)."""

    def __init__(self, channels: int = 1, base: int = 32, blocks: int = 2, lambda_cyc: float = 10.0,
                 lambda_id: float = 5.0, betas: tuple[float, float] = (0.5, 0.999)):
        super().__init__()
        self.G_AB, self.G_BA = TranslationGenerator(channels, base, blocks), TranslationGenerator(channels, base, blocks)
        self.D_A, self.D_B = PatchDiscriminator(channels, base), PatchDiscriminator(channels, base)
        self.lambda_cyc, self.lambda_id, self.betas = lambda_cyc, lambda_id, tuple(betas)

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        generators = [*self.G_AB.parameters(), *self.G_BA.parameters()]
        critics = [*self.D_A.parameters(), *self.D_B.parameters()]
        return {"G": torch.optim.Adam(generators, lr=lr, betas=self.betas),
                "D": torch.optim.Adam(critics, lr=lr, betas=self.betas)}

    def translate(self, x: Tensor, to: str) -> Tensor:
        """x from the other domain -> domain ``to`` ("A" or "B")."""
        if to not in ("A", "B"):
            raise ValueError(f"to must be 'A' or 'B', got {to!r}")
        return self.G_BA(x) if to == "A" else self.G_AB(x)

    def train_step(self, x: Tensor, y: Tensor | None, step: int, update) -> dict[str, Tensor]:
        """One generator step, then one step of both discriminators, on the A and B images of the batch."""
        if y is None or not ((y == 0).any() and (y == 1).any()):
            raise ValueError("CycleGAN needs (x, y) with y = 0 for domain A and y = 1 for domain B, both in every "
                             "batch; pass fit(model, (x, domain)) with enough images of each domain")
        a, b = x[y == 0], x[y == 1]
        fake_b, fake_a = self.G_AB(a), self.G_BA(b)
        adversarial = generator_loss_non_saturating(self.D_B(fake_b)) + generator_loss_non_saturating(self.D_A(fake_a))
        cycle = F.l1_loss(self.G_BA(fake_b), a) + F.l1_loss(self.G_AB(fake_a), b)
        identity = F.l1_loss(self.G_BA(a), a) + F.l1_loss(self.G_AB(b), b) if self.lambda_id else torch.zeros(())
        g_loss = adversarial + self.lambda_cyc * cycle + self.lambda_id * identity
        terms = {"g_loss": g_loss, "adversarial": adversarial, "cycle": cycle, "identity": identity,
                 "g_grad_norm": update(g_loss, "G")}
        d_loss = (discriminator_loss(self.D_A(a), self.D_A(fake_a.detach()))
                  + discriminator_loss(self.D_B(b), self.D_B(fake_b.detach())))
        terms.update(d_loss=d_loss, d_grad_norm=update(d_loss, "D"))
        return terms


def build_cyclegan(image_shape: tuple[int, int, int], num_classes: int | None = None, **options) -> CycleGAN:
    """Model-zoo builder (``--model cyclegan``): train with ``--conditional`` on a set whose labels are
    the domains (0 = A, 1 = B); ``options`` go to ``CycleGAN``."""
    if num_classes is not None and num_classes != 2:
        raise ValueError(f"cyclegan's labels are the two domains (0 = A, 1 = B); this data set has {num_classes} classes")
    return CycleGAN(image_shape[0], **options)
