"""Break the code each fault-suite assertion guards, one mutant at a time, and check that its test goes red.

    .venv/bin/python tests/faults/mutants/run.py [--list] [NAME-PART ...]

Each mutant in mutants.json replaces one exact piece of text in one or more files (it must be found exactly once),
runs the guarding test (real engine, registry and cluster, as the fault suite itself), and puts the files back,
also on Ctrl-C, then runs the mutant's "after" command if it has one (e.g. start dockerd again). Prints one line
per mutant: red (the test caught it) or GREEN (it did not), with the test's first failing line. Not part of
`./run test`: the whole list takes about an hour. Nothing here is sent anywhere but loopback and the containers and
pods the tests start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
MUTANTS = Path(__file__).with_name("mutants.json")
TEST_TIMEOUT = 1500  # the slowest guarding test waits up to 300 s for a rollback that never completes


def apply(edits: list[dict[str, str]]) -> dict[Path, str]:
    """The originals of the files it changed (restore them with restore())."""
    originals: dict[Path, str] = {}
    for edit in edits:
        path = REPO / edit["file"]
        text = path.read_text()
        originals.setdefault(path, text)
        if text.count(edit["old"]) != 1:
            restore(originals)
            raise SystemExit(f"{edit['file']}: the text to replace is not there exactly once; update mutants.json")
        path.write_text(text.replace(edit["old"], edit["new"], 1))
    return originals


def restore(originals: dict[Path, str]) -> None:
    for path, text in originals.items():
        path.write_text(text)


def run(mutant: dict) -> tuple[bool, str]:
    """(caught, the first line that says where) for one mutant."""
    originals = apply(mutant["edits"])
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", *mutant["tests"], "-x", "-q", "--tb=short",
                                 "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True,
                                timeout=TEST_TIMEOUT, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    except subprocess.TimeoutExpired:
        return True, f"timed out after {TEST_TIMEOUT}s"
    finally:
        restore(originals)
        if mutant.get("after"):  # put the machine back where a mutant broke more than files (e.g. stopped dockerd)
            subprocess.run(mutant["after"], shell=True, cwd=REPO, timeout=TEST_TIMEOUT, check=False,
                           env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    # Where the test itself failed, before any teardown error (pytest prints ERRORS before FAILURES).
    failures = result.stdout.split("= FAILURES =", 1)[-1]
    where = next((line for line in failures.splitlines() if re.match(r"^tests/.*:\d+: ", line)), "")
    return result.returncode != 0, where


def main() -> int:
    mutants = json.loads(MUTANTS.read_text())
    wanted = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    chosen = [m for m in mutants if not wanted or any(part in m["name"] for part in wanted)]
    if "--list" in sys.argv:
        for mutant in chosen:
            print(f"{mutant['name']}  ->  {mutant['guards']}")
        return 0
    surprises = []
    for mutant in chosen:
        started = time.monotonic()
        caught, where = run(mutant)
        if caught == (mutant.get("expected") == "green"):
            surprises.append(mutant["name"])
        print(f"{'red  ' if caught else 'GREEN'} {time.monotonic() - started:5.0f}s  {mutant['name']}  "
              f"[guards: {mutant['guards']}]  {where}", flush=True)
    print(f"{len(chosen) - len(surprises)} of {len(chosen)} as expected (red, or green where mutants.json says why)"
          + (f"; not as expected: {', '.join(surprises)}" if surprises else ""))
    return 1 if surprises else 0


if __name__ == "__main__":
    sys.exit(main())
