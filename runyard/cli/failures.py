"""Turn every expected failure into a short message and an exit status, never a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from runyard.cli.client import CliError
from runyard.exceptions import ConfigError, RunyardError

PROG = "runyard"


def error_line(message: str) -> None:
    """Write `runyard: <message>` to stderr."""
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def print_config_error(error: ConfigError) -> None:
    """Write each config problem on its own line, prefixed with the file path."""
    for problem in error.problems or ["invalid config"]:
        sys.stderr.write(f"{error.path}: {problem}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Report what escapes a command as one line each and exit 1."""
    try:
        yield
    except CliError as error:
        error_line(error.message)
        raise SystemExit(error.exit_code) from None
    except ConfigError as error:
        print_config_error(error)
        raise SystemExit(1) from None
    except BrokenPipeError:
        # The reader went away (`runyard logs X | head`): stop quietly, and keep
        # the interpreter from failing again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
    except (RunyardError, OSError) as error:
        error_line(str(error))
        raise SystemExit(1) from None
