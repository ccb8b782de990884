"""Figures for the notebooks: image grids, loss curves, 2D points and densities, chain animations.

::

    from course_lib.plotting import show_images, plot_history, scatter_2d, density_2d, animate_chain
    show_images(samples, title="DDPM samples")           # [N, C, H, W], C = 1 or 3
    plot_history(result.history, log=True)               # result = fit(...)
    density_2d(flow.log_prob, lim=4)                      # or density_2d(samples)
    anim = animate_chain(chain, value_range=(-1, 1))     # list of [N, C, H, W] frames
    animation_html(anim)                                  # shows in Jupyter, no ffmpeg needed

Value ranges of images. ``value_range=(lo, hi)`` says which values map to black and white
(values outside are clipped). Left as None it is inferred: uint8 -> (0, 255); a float tensor
with any negative value -> (-1, 1) (the course's model range, ``to_signed``); otherwise (0, 1).
Model samples often overshoot a little, so values within 0.5 beyond that range are clipped;
values further out are an error (pass ``value_range`` to say what you mean).

The module never chooses a matplotlib backend: notebooks show figures inline, tests set
``MPLBACKEND=Agg``, and ``save_grid_png`` writes files without pyplot.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib.image
import numpy as np
import torch

__all__ = ["image_grid", "show_images", "save_grid_png", "plot_history", "scatter_2d", "density_2d",
           "animate_chain", "animation_html"]

_OVERSHOOT = 0.5  # how far outside the inferred range values may go before it is an error


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _infer_range(x: np.ndarray, dtype) -> tuple[float, float]:
    if dtype in (np.uint8, torch.uint8):
        return 0.0, 255.0
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    guess = (-1.0, 1.0) if lo < 0 else (0.0, 1.0)
    if lo < guess[0] - _OVERSHOOT or hi > guess[1] + _OVERSHOOT:
        raise ValueError(
            f"image values span [{lo:.3g}, {hi:.3g}], which is neither [-1, 1] nor [0, 1]; pass "
            "value_range=(lo, hi) (e.g. value_range=(-1, 1) to clip a noisy chain)"
        )
    return guess


def image_grid(x, nrow: int | None = None, value_range: tuple[float, float] | None = None,
               padding: int = 2) -> np.ndarray:
    """Tile images into one array with values in [0, 1].

    Args:
        x: tensor or array [N, C, H, W] (or one image [C, H, W]), C = 1 or 3; see the module
            docstring for the value range.
        nrow: images per row (default ceil(sqrt(N))).
        padding: pixels of white between images.
    Returns:
        float32 [rows * (H + p) + p, nrow * (W + p) + p] for C = 1, or [..., ..., 3] for C = 3.
    """
    dtype = x.dtype
    a = _numpy(x)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(
            f"expected images [N, C, H, W] or [C, H, W], got shape {a.shape}; for [N, H, W] use x[:, None]"
        )
    n, c, h, w = a.shape
    if c not in (1, 3):
        raise ValueError(
            f"images must have 1 or 3 channels, got {c} (shape {a.shape}); is the layout [N, C, H, W]?"
        )
    if n == 0:
        raise ValueError("no images to show (got an empty batch)")
    lo, hi = value_range if value_range is not None else _infer_range(a, dtype)
    a = np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.ones((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), np.float32)
    for i in range(n):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[:, top : top + h, left : left + w] = a[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def show_images(x, nrow: int | None = None, title: str | None = None, ax=None,
                value_range: tuple[float, float] | None = None):
    """Show a batch of images as one grid (grey colour map for one channel); returns the Axes."""
    import matplotlib.pyplot as plt

    grid = image_grid(x, nrow, value_range)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(8, 1 + grid.shape[1] / 40), min(8, 1 + grid.shape[0] / 40)))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def save_grid_png(x, path, nrow: int | None = None, value_range: tuple[float, float] | None = None,
                  scale: int = 1) -> None:
    """Write the image grid to a PNG file; ``scale`` enlarges each pixel to scale x scale."""
    grid = image_grid(x, nrow, value_range)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    matplotlib.image.imsave(str(path), grid, cmap="gray", vmin=0, vmax=1)


def _smooth(values: np.ndarray, smooth: float) -> np.ndarray:
    """Exponential moving average s_t = smooth * s_(t-1) + (1 - smooth) * v_t, debiased like Adam."""
    out, s = np.empty_like(values), 0.0
    for t, v in enumerate(values):
        s = smooth * s + (1 - smooth) * v
        out[t] = s / (1 - smooth ** (t + 1))
    return out


def plot_history(history: dict, keys: Sequence[str] | None = None, smooth: float = 0.0, log: bool = False,
                 axes=None):
    """One panel per term of ``fit``'s history (or eval_history), against ``history["step"]``.

    ``history`` may also be the result of ``fit`` itself (its ``.history`` is used).

    ``smooth`` in [0, 1) draws an exponential moving average over the raw curve (raw in a
    faint line); ``log`` puts the y-axis on a log scale (terms with values <= 0 stay linear).
    NaN marks a log interval where a term was not logged (a GAN's ``g_loss`` with k > log_every):
    each curve joins the points where its term was logged. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    history = getattr(history, "history", history)
    if "step" not in history:
        raise ValueError("history has no 'step' list; pass fit(...).history or .eval_history")
    keys = list(keys) if keys is not None else [k for k in history if k != "step"]
    missing = [k for k in keys if k not in history]
    if missing or not keys:
        terms = [k for k in history if k != "step"]
        raise ValueError(f"history has no term(s) {missing or keys}; it has {terms}")
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        axes = axes[0]
    for ax, key in zip(axes, keys):
        values = np.asarray(history[key], dtype=float)
        logged = ~np.isnan(values)
        steps, values = np.asarray(history["step"])[logged], values[logged]
        if smooth > 0:
            ax.plot(steps, values, alpha=0.3, color="C0")
            ax.plot(steps, _smooth(values, smooth), color="C0")
        else:
            ax.plot(steps, values, color="C0")
        if log and values.size and np.all(values > 0):
            ax.set_yscale("log")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig = axes[0].figure
    fig.tight_layout()
    return fig


def _points(points) -> np.ndarray:
    p = _numpy(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"expected 2D points [N, 2], got shape {p.shape}")
    return p


def scatter_2d(points, ax=None, title: str | None = None, c=None, s: float = 2.0, alpha: float = 0.5,
               lim: float | None = None):
    """Scatter plot of points [N, 2] (tensor or array); ``c`` colours them (e.g. labels). Returns the Axes."""
    import matplotlib.pyplot as plt

    p = _points(points)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(p[:, 0], p[:, 1], c=_numpy(c) if c is not None else None, s=s, alpha=alpha, linewidths=0)
    ax.set_aspect("equal")
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    if title:
        ax.set_title(title)
    return ax


def density_2d(source: Callable | torch.Tensor | np.ndarray, lim: float = 4.0, resolution: int = 200,
               ax=None, title: str | None = None, device=None):
    """Show a 2D density on the square [-lim, lim]^2.

    ``source`` is either ``log_prob_fn(points [M, 2]) -> [M]`` (evaluated on a resolution x
    resolution grid, shown as exp(log p)) or samples [N, 2] (shown as a normalised 2D
    histogram). Returns the Axes; its image array is the density grid [resolution, resolution].
    """
    import matplotlib.pyplot as plt

    edges = np.linspace(-lim, lim, resolution + 1)
    if callable(source):
        centres = (edges[:-1] + edges[1:]) / 2
        gx, gy = np.meshgrid(centres, centres)  # row i = y value i, column j = x value j
        grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1)).float().to(device or "cpu")
        with torch.no_grad():
            log_p = torch.cat([source(chunk).reshape(-1) for chunk in grid.split(10_000)])
        density = log_p.exp().float().cpu().numpy().reshape(resolution, resolution)
    else:
        p = _points(source)
        density, _, _ = np.histogram2d(p[:, 1], p[:, 0], bins=[edges, edges], density=True)  # rows = y
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(density, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis", interpolation="nearest")
    if title:
        ax.set_title(title)
    return ax


def animate_chain(frames, interval: int = 100, nrow: int | None = None,
                  value_range: tuple[float, float] | None = None, titles: Sequence[str] | None = None,
                  lim: float = 4.0):
    """Animate a chain: a sequence of image batches [N, C, H, W] or of 2D point clouds [N, 2].

    For images the value range (if not given) is inferred from the LAST frame, the clean end
    of a denoising chain, and earlier noisy frames are clipped to it. ``titles`` labels each
    frame (e.g. ``[f"t = {t}" for t in ts]``). Returns a ``matplotlib.animation.FuncAnimation``;
    in a notebook show it with ``animation_html(anim)``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    frames = list(frames)
    if not frames:
        raise ValueError("animate_chain got no frames")
    if titles is not None and len(titles) != len(frames):
        raise ValueError(f"{len(titles)} titles for {len(frames)} frames")
    fig, ax = plt.subplots(figsize=(4, 4))
    if _numpy(frames[-1]).ndim == 2:  # point clouds
        scatter_2d(frames[0], ax=ax, lim=lim)
        dots = ax.collections[0]

        def draw(i):
            dots.set_offsets(_points(frames[i]))
            ax.set_title(titles[i] if titles else f"frame {i}")
    else:
        if value_range is None:
            value_range = _infer_range(_numpy(frames[-1]), frames[-1].dtype)
        grids = [image_grid(f, nrow, value_range) for f in frames]
        image = ax.imshow(grids[0], cmap="gray" if grids[0].ndim == 2 else None, vmin=0, vmax=1)
        ax.set_axis_off()

        def draw(i):
            image.set_data(grids[i])
            ax.set_title(titles[i] if titles else f"frame {i}")

    draw(0)
    anim = FuncAnimation(fig, draw, frames=len(frames), interval=interval)
    plt.close(fig)  # the animation owns the figure; don't also show it as a still image
    return anim


def animation_html(anim):
    """The animation as a self-contained JavaScript player (``anim.to_jshtml()``, no ffmpeg)."""
    from IPython.display import HTML

    return HTML(anim.to_jshtml())
