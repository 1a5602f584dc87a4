"""`invoke up`: every stage in order, each one a no-op where its inputs are unchanged.

engine -> export (only models with no version yet) -> build (devel, serving and, with images.web, the page) ->
registry -> push -> cluster -> deploy (a new image over a serving one: release, the canary and quality gate) ->
smoke-test.
A failing stage stops the run before the next one starts (no push after a failed build, no deploy after a failed
push), and its error is the one the user sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tfship import cluster, engine, export, images, models, push, registry, release, smoke
from tfship.config import Config
from tfship.errors import SmokeTestError
from tfship.progress import step


@dataclass
class UpSummary:
    images: list[str] = field(default_factory=list)
    deployed: str = ""
    smoke: list[smoke.ReplicaResult] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = ["images:", *(f"  {line}" for line in self.images), f"deployed: {self.deployed}", "smoke test:"]
        lines += [f"  {line}" for line in smoke.format_table(self.smoke).splitlines()]
        lines.append(f"done in {self.seconds:.0f}s")
        return "\n".join(lines)


class UpFailedSmokeTest(SmokeTestError):
    """Every stage ran, but a replica failed the smoke test: the error carries the summary to show."""

    def __init__(self, summary: UpSummary, cause: SmokeTestError):
        super().__init__(cause.message, cause.hint)
        self.summary = summary


def up(config: Config) -> UpSummary:
    """Run every stage and return the summary; raise UpFailedSmokeTest (with the summary) when a replica failed."""
    with step("tfship up") as progress:
        engine.ensure_engine(config)
        missing = [spec.name for spec in config.models if spec.exporter and not models.versions(config, spec.name)]
        for name in missing:
            export.export(config, model=name)
        images.build(config, images=images.all_roles(config))
        if config.registry.local:
            registry.up(config)
        recorded = push.push(config)
        cluster.up(config)
        deployed = release.deploy_or_release(config)
        results = smoke.smoke_test(config)
        summary = UpSummary(
            images=[f"{image.role}: {image.pinned_ref}" for image in recorded.images.values()],
            deployed=str(deployed),
            smoke=results,
        )
        passed = sum(result.ok for result in results)
        progress.done(f"{deployed.ready} replicas serving, {passed} of {len(results)} passed the smoke test")
        summary.seconds = progress.elapsed
    try:
        smoke.require_all_ok(results)
    except SmokeTestError as failed:
        raise UpFailedSmokeTest(summary, failed) from None
    return summary
