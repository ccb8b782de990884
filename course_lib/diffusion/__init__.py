"""Diffusion models (notebooks 06 and 07).

* ``schedules``: beta_t schedules (linear, cosine), alpha_bar_t, SNR(t).
* ``gaussian_diffusion.GaussianDiffusion``: the DDPM forward/reverse processes and losses.
* ``unet``: the eps_theta network; ``model.build_ddpm``: the two put together.
* ``toy``: an MLP eps_theta for 2D points, mean prediction, the exact E[eps | x_t] of a Gaussian
  mixture (notebook 06, section 5).
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
