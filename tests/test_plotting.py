"""Tests of course_lib.plotting: grids for every value range, curves, 2D plots, animations."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: before pyplot is imported anywhere

import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib.plotting import (  # noqa: E402
    animate_chain, animation_html, density_2d, image_grid, plot_history, save_grid_png, scatter_2d,
    show_images,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _ramp_uint8():
    """Two 1x2x3 images with known pixels: 0, 51, ..., 255 and the reverse."""
    a = torch.tensor([0, 51, 102, 153, 204, 255], dtype=torch.uint8).view(1, 2, 3)
    return torch.stack([a, a.flip(-1)])  # [2, 1, 2, 3]


@pytest.mark.parametrize("convert", [
    lambda u: u,                              # uint8 0..255
    lambda u: u.float() / 255,                # [0, 1]
    lambda u: u.float() / 127.5 - 1,          # [-1, 1]
    lambda u: (u.float() / 127.5 - 1).numpy(),  # numpy works too
])
def test_grid_maps_every_range_to_unit_interval(convert):
    grid = image_grid(convert(_ramp_uint8()), nrow=2, padding=1)
    # 2 images in one row: height 1 + 2 + 1, width 1 + 3 + 1 + 3 + 1.
    assert grid.shape == (4, 9) and grid.dtype == np.float32
    np.testing.assert_allclose(grid[1:3, 1:4].ravel(), np.arange(6) / 5, atol=1e-6)
    np.testing.assert_allclose(grid[1, 5:8], [0.4, 0.2, 0.0], atol=1e-6)  # second image, flipped
    assert np.all(grid[0] == 1) and np.all(grid[:, 4] == 1)  # white padding


def test_grid_rgb_layout_and_rows():
    x = torch.zeros(5, 3, 4, 4)
    x[:, 0] = 1.0  # pure red in [0, 1]
    grid = image_grid(x, nrow=2, padding=2)
    assert grid.shape == (3 * 6 + 2, 2 * 6 + 2, 3)
    np.testing.assert_array_equal(grid[2, 2], [1.0, 0.0, 0.0])
    assert image_grid(x[0]).shape == (8, 8, 3)  # one image [C, H, W]


def test_grid_value_range_and_errors():
    x = torch.full((1, 1, 2, 2), 5.0)
    np.testing.assert_allclose(image_grid(x, value_range=(0, 10), padding=0), 0.5)
    noise = torch.randn(2, 1, 4, 4) * 3
    assert image_grid(noise, value_range=(-1, 1)).max() <= 1.0  # clipped
    with pytest.raises(ValueError, match="pass value_range"):
        image_grid(noise)
    with pytest.raises(ValueError, match="1 or 3 channels, got 4"):
        image_grid(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"x\[:, None\]"):
        image_grid(torch.zeros(8, 8))


def test_show_images_and_save_png(tmp_path):
    ax = show_images(_ramp_uint8(), title="ramp")
    assert ax.get_title() == "ramp"
    assert ax.images[0].get_array().shape == (6, 12)  # (2 + 2 + 2) x (2 + 3 + 2 + 3 + 2)
    path = tmp_path / "grid.png"
    save_grid_png(_ramp_uint8(), path, nrow=1, scale=3)
    png = matplotlib.image.imread(path)  # RGBA in [0, 1]
    assert png.shape == (3 * 10, 3 * 7, 4)
    # pixel (row 0, col 1) of image 1 is 51/255 = 0.2: grey, at (2 + 0) * 3, (2 + 1) * 3
    np.testing.assert_allclose(png[6, 9, :3], 0.2, atol=1 / 255)


def test_plot_history_panels_and_smoothing():
    history = {"step": [10, 20, 30, 40], "loss": [4.0, 2.0, 1.0, 0.5], "kl": [0.0, 1.0, 0.0, 1.0]}
    fig = plot_history(history, smooth=0.5, log=True)
    loss_ax, kl_ax = fig.axes
    assert loss_ax.get_yscale() == "log" and kl_ax.get_yscale() == "linear"  # kl has zeros
    raw, smoothed = kl_ax.lines
    np.testing.assert_array_equal(raw.get_xdata(), history["step"])
    # Debiased EMA by hand: s = (0, 0.5, 0.25, 0.625) / (0.5, 0.75, 0.875, 0.9375).
    np.testing.assert_allclose(smoothed.get_ydata(), [0, 0.5 / 0.75, 0.25 / 0.875, 0.625 / 0.9375])
    assert len(plot_history(history, keys=["loss"]).axes) == 1

    class Result:  # what fit returns: plot_history takes it directly
        pass

    result = Result()
    result.history = history
    assert len(plot_history(result).axes) == 2
    with pytest.raises(ValueError, match="no term"):
        plot_history(history, keys=["elbo"])


def test_plot_history_joins_the_steps_where_a_term_was_logged():
    nan = float("nan")
    history = {"step": [1, 2, 3, 4], "d_loss": [1.0, 0.9, 0.8, 0.7], "g_loss": [nan, 2.0, nan, 1.0]}
    _, g_ax = plot_history(history, log=True).axes
    (line,) = g_ax.lines
    np.testing.assert_array_equal(line.get_xdata(), [2, 4])
    np.testing.assert_array_equal(line.get_ydata(), [2.0, 1.0])
    assert g_ax.get_yscale() == "log"


def test_scatter_and_density():
    pts = torch.randn(500, 2)
    ax = scatter_2d(pts, title="gauss", lim=3)
    assert ax.collections[0].get_offsets().shape == (500, 2) and ax.get_xlim() == (-3, 3)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        scatter_2d(torch.zeros(5, 3))

    def log_prob(p):  # standard normal in 2D
        return -0.5 * (p**2).sum(1) - np.log(2 * np.pi)

    ax = density_2d(log_prob, lim=3, resolution=60)
    grid = ax.images[0].get_array()
    assert grid.shape == (60, 60)
    cell = (6 / 60) ** 2
    assert abs(grid.sum() * cell - 1) < 0.02  # integrates to ~1 over [-3, 3]^2 (mass 0.9946)
    ax = density_2d(torch.randn(20_000, 2) * 0.5 + torch.tensor([1.0, 0.0]), lim=3, resolution=30)
    hist = np.asarray(ax.images[0].get_array())
    row, col = np.unravel_index(hist.argmax(), hist.shape)
    assert abs(-3 + (col + 0.5) * 0.2 - 1.0) < 0.5 and abs(-3 + (row + 0.5) * 0.2) < 0.5  # peak near (1, 0)


def test_animate_chain_images_and_points():
    chain = [torch.randn(4, 1, 5, 5) * s for s in (3.0, 1.0)] + [torch.rand(4, 1, 5, 5)]
    anim = animate_chain(chain, titles=["t=2", "t=1", "t=0"])
    html = animation_html(anim).data
    assert "<script" in html and html.count("data:image/png;base64") == 3  # one image per frame
    points = animate_chain([torch.randn(50, 2) for _ in range(2)])
    assert "<script" in points.to_jshtml()
    with pytest.raises(ValueError, match="2 titles for 3 frames"):
        animate_chain(chain, titles=["a", "b"])
