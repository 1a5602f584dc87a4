"""The one error root: every failure a user can cause or fix is a TfshipError.

Tasks print it as a single line, `Error: <message> (hint: <hint>)`, and exit non-zero without a traceback.
"""

from __future__ import annotations


class TfshipError(Exception):
    """A failure with a user-facing message and a hint saying what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return f"Error: {text}"


class ConfigError(TfshipError):
    """tfship.yaml, TFSHIP_* environment or a flag holds an unknown key or a bad value."""


class ModelError(TfshipError):
    """A model on disk does not follow the /models/<name>/<integer version>/ contract or does not load."""


class DockerError(TfshipError):
    """The Docker engine is missing, down, or refused an operation (build, run, push)."""


class RegistryError(TfshipError):
    """A registry is unreachable, untrusted, or refused credentials."""


class KubernetesError(TfshipError):
    """The cluster is unreachable or a rollout failed."""


class SmokeTestError(TfshipError):
    """A replica gave a wrong answer or none."""
