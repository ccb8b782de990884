"""Diffusion models (notebooks 06 and 07).

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

Time indexing: schedule tensors have length T + 1 and entry t is lecture time t (entry 0 is
the clean data), see ``gaussian_diffusion``.
"""
from course_lib.diffusion.gaussian_diffusion import GaussianDiffusion
from course_lib.diffusion.model import build_ddpm
from course_lib.diffusion.schedules import cosine_beta_schedule, linear_beta_schedule, snr
from course_lib.diffusion.unet import UNet, UNetConfig

__all__ = ["GaussianDiffusion", "build_ddpm", "linear_beta_schedule", "cosine_beta_schedule", "snr", "UNet",
           "UNetConfig"]
