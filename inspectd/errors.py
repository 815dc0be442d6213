"""Error classes and process exit codes.

Exit codes are part of the systemd contract: the "cannot boot" ones are listed
in the unit's RestartPreventExitStatus so a broken recipe does not restart forever.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # unexpected; systemd restarts
    CONFIG = 2  # invalid station/product file (cannot boot, no restart)
    MODEL = 3  # model/engine missing, foreign, tampered or mismatched (cannot boot, no restart)
    GOLDEN = 4  # golden-image gate failed at start (cannot boot, no restart)
    STALL = 70  # a stage stalled: the internal watchdog gave up; systemd restarts
    CAMERA = 71  # camera could not be opened at start; systemd restarts (cable may come back)
    DISK_FULL = 72  # no room for the journal at start; systemd restarts (space may be freed)


class InspectdError(Exception):
    """Base for errors a user can act on; printed without a traceback."""

    exit_code = ExitCode.FAILURE


class ConfigError(InspectdError):
    """One or more problems in configuration files, each already formatted as file:line: key: message."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class ModelError(InspectdError):
    exit_code = ExitCode.MODEL


class GoldenCheckError(InspectdError):
    exit_code = ExitCode.GOLDEN


class CameraError(InspectdError):
    exit_code = ExitCode.CAMERA


class DiskFullError(InspectdError):
    """The journal's filesystem has no room: restartable, unlike a config error (nothing in the files is wrong)."""

    exit_code = ExitCode.DISK_FULL


class BackendUnavailable(InspectdError):
    """A backend whose SDK or device is not present on this machine."""

    exit_code = ExitCode.MODEL


class BadOutput(ValueError):
    """A model output no verdict can rest on: missing, mis-shaped or not finite. In a run the part gets the
    fail-safe `bad_output` (never a pass); before READY (self-check, warm-up, golden gate) it is a ModelError."""
