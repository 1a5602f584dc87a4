"""The fault table: every faults test records what it did through the `fault_row` fixture, and the end of the run
prints one table (fault, expected, observed, data lost, result), the result being the test's own outcome.

Also: the dockerd-restart test runs last (it disturbs everything on the engine), whatever the order of collection.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

ROWS = pytest.StashKey[list]()
LAST = "test_dockerd_restart"


@dataclass
class FaultRow:
    nodeid: str
    fault: str
    expected: str
    observed: str
    lost: str


@pytest.fixture
def fault_row(request):
    """Call fault_row(fault, expected, observed, lost) once the fault's effects were observed (before asserting)."""
    rows = request.config.stash.setdefault(ROWS, [])

    def add(fault: str, expected: str, observed: str, lost: str) -> None:
        rows.append(FaultRow(request.node.nodeid, fault, expected, observed, lost))

    return add


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: LAST in item.nodeid)  # stable: only moves the disruptive test to the end


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows: list[FaultRow] = config.stash.get(ROWS, [])
    outcomes = {report.nodeid: key for key in ("passed", "failed", "error", "skipped")
                for report in terminalreporter.stats.get(key, []) if getattr(report, "nodeid", None)}
    recorded = {row.nodeid for row in rows}
    for nodeid, outcome in outcomes.items():  # a test that failed before it could record still shows up
        if "tests/faults/" in nodeid and nodeid not in recorded and outcome != "passed":
            rows.append(FaultRow(nodeid, nodeid.split("::")[-1], "", f"{outcome} before observing", "?"))
    if not rows:
        return
    head = ("fault", "expected", "data lost")
    widths = [max(len(title), *(len(getattr(row, name)) for row in rows))
              for title, name in zip(head, ("fault", "expected", "lost"))]
    widths = [min(width, cap) for width, cap in zip(widths, (50, 44, 12))]
    terminalreporter.section("fault table")
    terminalreporter.write_line(f"{head[0]:<{widths[0]}}  {head[1]:<{widths[1]}}  {head[2]:<{widths[2]}}  result  observed")
    for row in rows:
        result = outcomes.get(row.nodeid, "?").upper()
        terminalreporter.write_line(f"{row.fault[:widths[0]]:<{widths[0]}}  {row.expected[:widths[1]]:<{widths[1]}}  "
                                    f"{row.lost[:widths[2]]:<{widths[2]}}  {result:<6}  {row.observed}")
