"""Exercises from one source, and an autograder that does not trust the submissions.

* ``source``: the single source ``solutions/NN_*.ipynb`` (nbgrader markers and metadata) and the
  student version ``exercises/NN_*.ipynb`` generated from it (``make_exercise_text``);
* ``checks``: hidden tests as data, ``grade_check(function, cases=[...])``, inputs drawn at
  grading time from the grading seed;
* ``submissions``: finding notebooks in a folder or zip, one row per entry, reading them defensively;
* ``policy``: static checks of the answers (allowed imports, forbidden reference calls), a teaching aid;
* ``sandbox`` + ``runner`` + ``cgroup``: the bubblewrap sandbox a submission runs in, under per-job limits;
* ``grading``: one submission -> a record; ``results``: a folder -> RESULTS/; ``state``: the seed and
  the key that signs records; ``cli``: the commands; ``release``: the course without solutions/.

See ``docs/grading.md`` for the instructor's guide and the threat model.
"""

from course_lib.assignments.checks import (
    array,
    as_tensor,
    grade_check,
    random_dirichlet,
    random_integers,
    random_normal,
    random_uniform,
)

__all__ = [
    "grade_check",
    "array",
    "as_tensor",
    "random_uniform",
    "random_normal",
    "random_integers",
    "random_dirichlet",
]
