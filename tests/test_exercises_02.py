"""Exercise set 02 (autoregressive models), graded by the real grader in one run.

Students, all made from the source notebook and graded together with
``python -m course_lib grade 02 SUBMISSIONS --out RESULTS --seed 7``:

* ``correct``: the solution itself -> 16/16;
* ``alternative``: equivalent answers written another way (the mask by loops over kernel positions and
  channels, the log-softmax through log(sum(exp(z - max))), the inverse CDF by searchsorted, the
  receptive field as a Minkowski sum of offset sets clipped to the image) -> 16/16;
* ``untouched``: the generated exercise -> 0;
* ``leaky_mask``: a mask that also keeps the pixel right of the centre (a one-pixel leak) -> the mask
  task scores 0, the rest full (12/16);
* ``no_blind_spot``: answers that assume stacked masks see their whole window (the receptive field
  as the window, no blind spot) -> the two understanding tasks score 0 (9/16).

That ``exercises/02_*.ipynb`` matches the source is tested for every set in test_assignments_source.py.
"""

import shutil
from pathlib import Path

import pytest
from exercise_harness import (
    assert_checks_keep_to_their_task,
    assert_grade,
    assert_set_layout,
    grade_cohort,
    with_answers,
)

from course_lib.assignments.source import load_set

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "02_autoregressive.ipynb"
EXERCISE = ROOT / "exercises" / "02_autoregressive.ipynb"
POINTS = {"causal_mask": 4, "nll_bits_per_dim": 2, "sample_step": 3, "receptive_field": 4, "blind_spot": 3}

ALTERNATIVE = {
    "answer_causal_mask": (
        "def causal_mask(kernel_size, mask_type, in_channels, out_channels, groups):\n"
        "    mask = np.zeros((out_channels, in_channels, kernel_size, kernel_size))\n"
        "    centre = kernel_size // 2\n"
        "    for o in range(out_channels):\n"
        "        for i in range(in_channels):\n"
        "            for r in range(kernel_size):\n"
        "                for s in range(kernel_size):\n"
        "                    before = r < centre or (r == centre and s < centre)\n"
        "                    g_out, g_in = o * groups // out_channels, i * groups // in_channels\n"
        "                    at_centre = r == centre and s == centre and (\n"
        "                        g_in < g_out if mask_type == 'A' else g_in <= g_out)\n"
        "                    mask[o, i, r, s] = float(before or at_centre)\n"
        "    return torch.from_numpy(mask).float()\n"
        "\n\n"
        "def stack_dependence(kernel_size, channels, groups, layers, height, width):\n"
        "    return masked_stack_dependence(causal_mask, kernel_size, channels, groups, layers, height, width)\n"
    ),
    "answer_nll_bits_per_dim": (
        "def nll_bits_per_dim(logits, x):\n"
        "    top = logits.max(dim=2, keepdim=True).values\n"
        "    log_z = top.squeeze(2) + torch.log(torch.exp(logits - top).sum(dim=2))  # [N, C, H, W]\n"
        "    picked = torch.take_along_dim(logits, x.unsqueeze(2), dim=2).squeeze(2)\n"
        "    return (log_z - picked).sum(dim=(1, 2, 3)) / (x[0].numel() * math.log(2))\n"
    ),
    "answer_sample_step": (
        "def sample_step(x, logits, c, i, j, u, temperature):\n"
        "    cdf = torch.cumsum(torch.softmax(logits[:, c, :, i, j] / temperature, dim=1), dim=1)\n"
        "    k = torch.searchsorted(cdf, u[:, None].to(cdf.dtype)).squeeze(1)  # first k with cdf >= u\n"
        "    out = x.clone()\n"
        "    out[:, c, i, j] = k.clamp(max=cdf.shape[1] - 1)\n"
        "    return out\n"
    ),
    "answer_receptive_field": (
        "def receptive_field(kernel_sizes, height, width, i, j):\n"
        "    reach = {(0, 0)}\n"
        "    for layer, k in enumerate(kernel_sizes):\n"
        "        c = int(k) // 2\n"
        "        allowed = [(r, s) for r in range(-c, c + 1) for s in range(-c, c + 1)\n"
        "                   if r < 0 or (r == 0 and (s < 0 or (s == 0 and layer > 0)))]\n"
        "        reach = {(a + r, b + s) for a, b in reach for r, s in allowed}\n"
        "    field = torch.zeros(height, width, dtype=torch.int64)\n"
        "    for a, b in reach:\n"
        "        if 0 <= i + a < height and 0 <= j + b < width:\n"
        "            field[i + a, j + b] = 1\n"
        "    return field\n"
    ),
}

LEAKY_MASK = {
    "answer_causal_mask": ("mask[:, :, c, :c] = 1.0  # the centre row, left of the centre",
                           "mask[:, :, c, :c] = 1.0\n    mask[:, :, c, c + 1:c + 2] = 1.0  # one pixel too many"),
}

NO_BLIND_SPOT = {
    "answer_receptive_field": (
        "def receptive_field(kernel_sizes, height, width, i, j):\n"
        "    reach = sum(int(k) // 2 for k in kernel_sizes)\n"
        "    field = torch.zeros(height, width, dtype=torch.int64)\n"
        "    field[max(0, i - reach):i, max(0, j - reach):j + reach + 1] = 1\n"
        "    field[i, max(0, j - reach):j] = 1\n"
        "    return field\n"
    ),
    "answer_blind_spot": (
        "def blind_spot(layers, height, width, i, j):\n"
        "    return torch.zeros(height, width, dtype=torch.int64)\n"
    ),
}


def students() -> dict:
    return {"correct": with_answers(SOLUTION, {}), "alternative": with_answers(SOLUTION, ALTERNATIVE),
            "untouched": EXERCISE.read_text(), "leaky_mask": with_answers(SOLUTION, LEAKY_MASK),
            "no_blind_spot": with_answers(SOLUTION, NO_BLIND_SPOT)}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run with the command instructors use; returns (grades.csv rows, JSON records)."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (the grader sandboxes every submission)")
    return grade_cohort(tmp_path_factory.mktemp("grade_02"), "02", students())


# student -> (total, status (None: not compared), {task: substring of its reason}); tasks not named score full marks
EXPECTED = {
    "correct": (16, None, {}),
    "alternative": (16, None, {}),
    "untouched": (0, None, {task: "not implemented yet" for task in POINTS}),
    "leaky_mask": (12, None, {"causal_mask": "wrong value"}),
    "no_blind_spot": (9, None, {"receptive_field": "wrong value", "blind_spot": "wrong value"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_grades_and_reasons(graded, student):
    assert_grade(graded, student, EXPECTED[student], POINTS)


def test_set_layout_points_and_policy():
    forbidden = assert_set_layout(SOLUTION, EXERCISE, POINTS, 5)
    assert all("course_lib.autoregressive" in names for names in forbidden.values())


def test_check_cells_do_not_show_or_use_other_answers():
    """A task's visible check calls only its own function and prints no values of it."""
    assert_checks_keep_to_their_task(EXERCISE, SOLUTION)


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_hidden_inputs_are_valid_for_any_seed(seed):
    """Every drawn case is a legal input: odd kernels, channels divisible by the groups, pixels inside the image."""
    for task in load_set(SOLUTION, seed=seed).tasks:
        for check in task.checks:
            for case in check.cases:
                if "kernel_size" in case:
                    assert case["kernel_size"] % 2 == 1 and case["channels"] % case["groups"] == 0, case
                if "kernel_sizes" in case:
                    assert all(int(k) % 2 == 1 for k in case["kernel_sizes"]), case
                if "height" in case and "i" in case:
                    assert 0 <= case["i"] < case["height"] and 0 <= case["j"] < case["width"], case
