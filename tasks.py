"""`invoke --list` in a checkout: tfship's tasks. They live in the library (src/tfship/tasks/), composed there once,
so that an installed tfship serves the same ones as the `tfship` command from any folder."""

from tfship.tasks import ns  # noqa: F401  (Invoke looks for `ns`)
