"""The `tfship` command: the same tasks as `invoke` in a checkout, for an installed tfship run from any folder
(the config is the tfship.yaml found from the current folder upwards, or TFSHIP_CONFIG)."""

from invoke import Program

from tfship import __version__
from tfship.tasks import ns

program = Program(namespace=ns, name="tfship", binary="tfship", version=__version__)


def main() -> None:
    program.run()
