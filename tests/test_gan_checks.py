"""The independent checks of notebook 04 pass on the lecture's results and catch a 1% error in each."""
import math

import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon

from course_lib.gan import checks


def d_star(p_data, p_g):
    return p_data / (p_data + p_g)


def value(p_data, p_g):  # -log 4 + 2 JSD, the JSD from scipy
    return -math.log(4) + 2 * jensenshannon(p_data.numpy(), p_g.numpy()) ** 2


def test_the_lecture_results_pass():
    assert checks.optimal_discriminator_error(d_star) < 1e-7
    assert checks.game_value_error(value) < 1e-10
    assert checks.generator_gradient_error(lambda l: -torch.sigmoid(l), lambda l: -F.softplus(l)) < 1e-12
    assert checks.generator_gradient_error(lambda l: -torch.sigmoid(-l), lambda l: F.softplus(-l)) < 1e-12


@pytest.mark.parametrize("mutant", [
    lambda p, q: p / (p + 1.01 * q),
    lambda p, q: 1.01 * p / (p + q),
    lambda p, q: q / (p + q),  # the classic slip: the generator's density on top
])
def test_a_wrong_optimal_discriminator_fails(mutant):
    assert checks.optimal_discriminator_error(mutant) > 1e-4


@pytest.mark.parametrize("mutant", [
    lambda p, q: -1.01 * math.log(4) + 2 * jensenshannon(p.numpy(), q.numpy()) ** 2,
    lambda p, q: -math.log(4) + 2.02 * jensenshannon(p.numpy(), q.numpy()) ** 2,
    lambda p, q: -math.log(4) + 2 * jensenshannon(p.numpy(), q.numpy()),  # JSD vs its square root
])
def test_a_wrong_game_value_fails(mutant):
    assert checks.game_value_error(mutant) > 1e-4


def test_a_wrong_generator_gradient_fails():
    assert checks.generator_gradient_error(lambda l: -1.01 * torch.sigmoid(l), lambda l: -F.softplus(l)) > 1e-4
    assert checks.generator_gradient_error(lambda l: -torch.sigmoid(l), lambda l: F.softplus(-l)) > 1e-4  # swapped
