"""Exercises from one source, and an autograder that does not trust the submissions.

* ``source``: the single source ``solutions/NN_*.ipynb`` (nbgrader markers and metadata) and the
  student version ``exercises/NN_*.ipynb`` generated from it (``make_exercise_text``);
* ``checks``: hidden tests as data, ``grade_check(function, cases=[...])``;
* ``submissions``: finding notebooks in a folder or zip, reading them defensively;
* ``policy``: static checks of the answers (allowed imports, forbidden reference calls);
* ``sandbox`` + ``runner``: the child process that runs a submission under limits;
* ``grading``: one submission -> a record; ``results``: a folder -> RESULTS/; ``cli``: the commands.

See ``docs/grading.md`` for the instructor's guide and the security model.
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
