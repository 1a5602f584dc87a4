"""Live progress for long steps: a start line, optional live lines, and a summary line with the time taken."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Step:
    def __init__(self, title: str):
        self.title = title
        self.started = time.monotonic()
        self.result = ""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, line: str) -> None:
        """One line of live progress (a build step, a download), indented under the step."""
        line = line.rstrip()
        if line:
            say(f"    {line}")

    def done(self, result: str) -> None:
        """What the summary line should say besides the time (e.g. 'up to date', an image id)."""
        self.result = result


@contextmanager
def step(title: str) -> Iterator[Step]:
    current = Step(title)
    say(f"==> {title}")
    try:
        yield current
    except BaseException:
        say(f"<== {title}: failed after {current.elapsed:.1f}s")
        raise
    suffix = f": {current.result}" if current.result else ""
    say(f"<== {title}{suffix} ({current.elapsed:.1f}s)")
