"""The U-Net eps_theta and build_ddpm: shapes, conditioning, time embedding, a tiny training run."""
import math

import pytest
import torch

from course_lib.diffusion import UNet, UNetConfig, build_ddpm
from course_lib.nn import timestep_embedding


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (1, 32), (3, 28)])
@pytest.mark.parametrize("num_classes", [None, 10])
def test_unet_maps_images_to_images(channels, size, num_classes):
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=channels, base_channels=8, num_classes=num_classes))
    x = torch.randn(2, channels, size, size)
    y = None if num_classes is None else torch.tensor([3, 7])
    out = net(x, torch.tensor([1, 1000]), y)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_unet_output_depends_on_time_and_label():
    torch.manual_seed(0)
    net = UNet(UNetConfig(base_channels=8, num_classes=10))
    x = torch.randn(1, 1, 28, 28)
    base = net(x, torch.tensor([10]), torch.tensor([3]))
    assert not torch.allclose(base, net(x, torch.tensor([500]), torch.tensor([3])))
    assert not torch.allclose(base, net(x, torch.tensor([10]), torch.tensor([4])))
    # y=None means the reserved "no label" index num_classes (for classifier-free guidance)
    torch.testing.assert_close(net(x, torch.tensor([10])), net(x, torch.tensor([10]), torch.tensor([10])))


def test_unet_time_embedding_is_the_sinusoidal_formula_through_the_mlp():
    net = UNet(UNetConfig(base_channels=8))
    t = torch.tensor([0, 5, 999])
    half = 4
    features = torch.tensor([[math.sin(s / 10000 ** (i / half)) for i in range(half)]
                             + [math.cos(s / 10000 ** (i / half)) for i in range(half)] for s in t.tolist()])
    torch.testing.assert_close(timestep_embedding(t, 8), features, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net.embed(t, None), net.time_mlp(features), atol=1e-5, rtol=1e-5)


def test_unet_errors_name_the_fix():
    net = UNet(UNetConfig(base_channels=8))
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 1, 30, 30), torch.tensor([1]))
    with pytest.raises(ValueError, match="num_classes"):
        net(torch.randn(1, 1, 28, 28), torch.tensor([1]), torch.tensor([2]))
    with pytest.raises(ValueError, match="divisible"):
        build_ddpm((1, 30, 30))


def test_build_ddpm_trains_and_samples():
    torch.manual_seed(0)
    diffusion = build_ddpm((1, 28, 28), num_classes=10, T=10, base_channels=8)
    assert diffusion.T == 10 and diffusion.data_shape == (1, 28, 28)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (4,))
    opt = torch.optim.Adam(diffusion.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in diffusion.model.parameters()]
    for _ in range(2):
        loss = diffusion.loss(x, y)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, diffusion.model.parameters()) if a.numel() > 1)
    samples = diffusion.sample(3, y=7, progress=False)
    assert samples.shape == (3, 1, 28, 28) and samples.abs().max() <= 1.0
    assert diffusion.training  # sample() restores the training mode


def test_default_size_is_cpu_friendly():
    n_params = sum(p.numel() for p in build_ddpm((1, 28, 28)).parameters())
    assert 1e5 < n_params < 2e6
