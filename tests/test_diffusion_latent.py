"""course_lib.diffusion.latent: the scale factor, the encode/decode round trip, training with fit, sampling.

The scale is checked against the VAE's own posterior means (and a 1% error in it must fail the round
trip); ``fit`` must train the DDPM and leave the VAE untouched. About 3 s on one core.
"""
import math

import pytest
import torch

from course_lib.diffusion import GaussianDiffusion
from course_lib.diffusion.latent import LatentDiffusion, build_latent_diffusion
from course_lib.diffusion.toy import MLPDenoiser
from course_lib.train import fit
from course_lib.vae import VAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_vae(decoder="logistic"):
    torch.manual_seed(0)
    return VAE((1, 8, 8), latent_dim=4, channels=8, decoder=decoder)


def images(n=64, seed=0):
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def round_trip_error(model: LatentDiffusion, x: torch.Tensor) -> float:
    """decode(encode(x)) must hand the VAE's decoder mu(x) itself: the scale cancels (relative error)."""
    seen, decode = [], model.vae.decode
    model.vae.decode = lambda z, y=None: seen.append(z) or decode(z, y)  # a spy on the decoder's input
    try:
        model.decode(model.encode(x))
    finally:
        del model.vae.decode
    mu = model.vae.encode(x)[0]
    return ((seen[0] - mu).abs().max() / mu.abs().max()).item()


def test_the_scale_gives_unit_variance_latents_and_cancels_in_the_round_trip():
    model = build_latent_diffusion(tiny_vae(), T=50, hidden=32)
    x = model.preprocess(images())
    with pytest.raises(RuntimeError, match="not measured"):
        model.encode(x)
    model.data_init(x)
    mu = model.vae.encode(x)[0]
    assert model.scale.item() == pytest.approx(mu.std().item())
    assert model.encode(x).std().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(model.encode(x), mu / mu.std())
    assert round_trip_error(model, x) < 1e-6
    assert model.decode(model.encode(x)).shape == x.shape

    class OffByOnePercent(LatentDiffusion):  # a decoder that forgets 1% of the scale
        def decode(self, z):
            return self.vae.decode(1.01 * z * self.scale)

    mutant = OffByOnePercent(model.vae, model.diffusion, scale=model.scale.item())
    assert round_trip_error(mutant, x) > 0.009
    model.data_init(model.preprocess(images(seed=1)))  # measured once: a later batch does not change it
    assert model.scale.item() == pytest.approx(mu.std().item())


def test_fit_trains_the_latent_ddpm_and_leaves_the_vae_frozen():
    vae = tiny_vae()
    vae_before = {k: v.clone() for k, v in vae.state_dict().items()}
    model = build_latent_diffusion(vae, T=50, hidden=32)
    net_before = [p.detach().clone() for p in model.diffusion.parameters()]
    result = fit(model, images(), steps=5, batch_size=16, lr=1e-2, ema_decay=0.9, device="cpu", progress=False)
    assert result.step == 5 and math.isfinite(result.history["loss"][-1])
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in vae_before.items())
    assert any(not torch.equal(a, b) for a, b in zip(net_before, model.diffusion.parameters()))
    assert not math.isnan(model.scale.item()) and result.ema.scale.item() == model.scale.item()
    assert not model.vae.training and model.training  # the VAE stays in eval mode
    samples = result.ema.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 8, 8) and samples.abs().max() <= 1
    assert model.postprocess(samples).dtype == torch.uint8


def test_the_latent_loss_is_l_simple_on_the_scaled_latents():
    model = build_latent_diffusion(tiny_vae(), T=50, hidden=32, scale=0.5)
    x = model.preprocess(images(8))
    torch.manual_seed(3)
    ours = model.loss(x)["loss"]
    torch.manual_seed(3)
    reference = model.diffusion.loss(model.vae.encode(x)[0] / 0.5)["loss"]
    torch.testing.assert_close(ours, reference)


def test_bad_inputs_are_refused_with_a_clear_error():
    vae = tiny_vae()
    wrong = GaussianDiffusion(MLPDenoiser(dim=3), data_shape=(3,), T=10)
    with pytest.raises(ValueError, match=r"data_shape=\(4,\)"):
        LatentDiffusion(vae, wrong)
    model = build_latent_diffusion(vae, T=10, scale=1.0)
    with pytest.raises(ValueError, match="unconditional"):
        model.loss(model.preprocess(images(4)), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, torch.zeros(2, dtype=torch.long))
    conditional = VAE((1, 8, 8), latent_dim=4, channels=8, num_classes=10)
    with pytest.raises(ValueError, match="without labels"):
        build_latent_diffusion(conditional)
