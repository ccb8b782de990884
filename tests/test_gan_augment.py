"""DiffAugment's transformations against loops over pixels, their gradients, and a GAN trained with them."""
from __future__ import annotations

import pytest
import torch

from course_lib.gan import build_dcgan
from course_lib.gan.augment import BACKGROUND, cutout, diff_augment, translate
from course_lib.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_translate_equals_a_loop_over_pixels():
    x = torch.randn(3, 2, 6, 5)
    shifts = torch.tensor([[1, -2], [0, 0], [-3, 2]])
    expected = torch.full_like(x, BACKGROUND)
    for n, (dy, dx) in enumerate(shifts.tolist()):
        for i in range(6):
            for j in range(5):
                if 0 <= i - dy < 6 and 0 <= j - dx < 5:
                    expected[n, :, i, j] = x[n, :, i - dy, j - dx]
    torch.testing.assert_close(translate(x, shifts=shifts), expected, rtol=0, atol=0)


def test_cutout_erases_one_square_of_the_given_side():
    x = torch.randn(2, 1, 8, 8)
    out = cutout(x, size=0.5, centres=torch.tensor([[4, 4], [0, 7]]))
    erased = (out != x)
    expected = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    expected[0, :, 2:6, 2:6] = True               # side 4 around the centre (4, 4)
    expected[1, :, 0:2, 5:8] = True               # the square is cut by the image's edges
    assert torch.equal(erased, expected) and (out[erased] == BACKGROUND).all()


def test_augmentation_passes_gradients_to_the_kept_pixels():
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    torch.manual_seed(0)
    out = diff_augment(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    kept = (grad != 0).float().mean().item()
    assert set(grad.unique().tolist()) <= {0.0, 1.0} and 0.3 < kept < 1.0  # each pixel kept at most once


def test_translation_is_uniform_over_the_allowed_shifts():
    torch.manual_seed(0)
    x = torch.zeros(4000, 1, 16, 16)
    x[:, :, 8, 8] = 1.0                           # one bright pixel: where it lands gives the shift
    out = translate(x, max_shift=0.125)           # p = 2: shifts -2..2 each way
    where = out.flatten(1).argmax(1)
    dy, dx = where // 16 - 8, where % 16 - 8
    assert dy.min() == -2 and dy.max() == 2 and dx.min() == -2 and dx.max() == 2
    counts = torch.bincount((dy + 2) * 5 + (dx + 2), minlength=25).float()
    assert (counts - 160).abs().max() < 5 * 160 ** 0.5


def test_a_gan_with_diffaugment_still_learns_two_classes(two_families):
    x, y = two_families
    torch.manual_seed(0)
    gan = build_dcgan((1, 8, 8), num_classes=2, base=16, latent_dim=8, augment=diff_augment)
    fit(gan, (x, y), steps=150, batch_size=64, lr=2e-3, grad_clip=None, device="cpu", progress=False)
    gan.eval()
    samples = gan.sample(200, torch.arange(200) % 2)
    top, bottom = samples[:, :, :4].mean(dim=(1, 2, 3)), samples[:, :, 4:].mean(dim=(1, 2, 3))
    assert (top - bottom)[0::2].mean() > 0.5 and (bottom - top)[1::2].mean() > 0.5
