"""Diffusion models (notebooks 06, 07 and 08).

* ``schedules``: beta_t schedules (linear, cosine), alpha_bar_t, SNR(t).
* ``gaussian_diffusion.GaussianDiffusion``: the DDPM forward/reverse processes and losses.
* ``unet``: the eps_theta network; ``model.build_ddpm``: the two put together.
* ``toy``: an MLP eps_theta for 2D points, mean prediction, the exact E[eps | x_t] of a Gaussian
  mixture (notebook 06, section 5).
* ``ddim``: DDIM sampling on any sub-sequence of steps (eta = 0 deterministic, 1 = DDPM's
  variance), DDIM inversion, naive step skipping (notebook 07).
* ``guidance``: classifier-free guidance, classifier guidance with a noise-conditional
  classifier (both algorithms of Dhariwal & Nichol), conditioning on an image; guidance enters
  every sampler through one ``eps_fn(x_t, t)`` (notebook 07).
* ``checks_07``: notebook 07's independent checks (DDIM marginals, eta = 1 variance, the CFG identity).
* ``checks``: the independent checks of notebook 06 as functions of the formula under test
  (tests/test_notebook_06_checks.py runs them on formulas with a 1% error).
* ``score``: score <-> eps, denoising score matching and annealed Langevin (``ScoreModel``), the
  VP-SDE with its reverse-SDE (Euler-Maruyama) and probability-flow ODE samplers, the exact score
  of a noised Gaussian mixture (notebook 08).
* ``vdm``: Variational Diffusion Models: learned monotone gamma(t) = -log SNR(t), the continuous-time
  loss (and its quadrature, for the end-point invariance), Fourier features, ``VDM`` (notebook 08).
* ``flow_matching``: conditional flow matching / rectified flow (``FlowMatching``), the exact
  marginal velocity of a Gaussian mixture; ``ode``: Euler and Heun solvers counting evaluations (notebook 08).
* ``latent``: latent diffusion on a trained VAE's scaled posterior means (notebook 08).
* ``checks_08``: notebook 08's independent checks (tests/test_diffusion_{score,vdm,flow_matching}.py).

Time indexing: schedule tensors have length T + 1 and entry t is lecture time t (entry 0 is
the clean data), see ``gaussian_diffusion``.
"""
from course_lib.diffusion.flow_matching import FlowMatching, build_flow_matching
from course_lib.diffusion.gaussian_diffusion import GaussianDiffusion
from course_lib.diffusion.latent import LatentDiffusion, build_latent_diffusion
from course_lib.diffusion.model import build_ddpm
from course_lib.diffusion.schedules import cosine_beta_schedule, linear_beta_schedule, snr
from course_lib.diffusion.score import VPSDE, ScoreModel
from course_lib.diffusion.unet import UNet, UNetConfig
from course_lib.diffusion.vdm import VDM, build_vdm

__all__ = ["GaussianDiffusion", "build_ddpm", "linear_beta_schedule", "cosine_beta_schedule", "snr", "UNet",
           "UNetConfig",
           "ScoreModel", "VPSDE", "VDM", "build_vdm", "FlowMatching", "build_flow_matching", "LatentDiffusion",
           "build_latent_diffusion"]
