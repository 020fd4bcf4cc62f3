"""Exit codes for the error tree: the only place errors become process exit statuses."""

from __future__ import annotations

from loopline.core.errors import (
    AlreadyExistsError,
    AuthenticationError,
    BackendError,
    ConfigurationError,
    ConflictError,
    IntegrityError,
    InvalidArgumentError,
    InvalidTransitionError,
    LooplineError,
    NotFoundError,
    PolicyDeniedError,
    UserCodeError,
    ValidationFailedError,
)

EXIT_FAILURE = 1
EXIT_USAGE = 2  # click's own code for bad flags

# Most specific first; the first isinstance match wins.
EXIT_CODES: tuple[tuple[type[LooplineError], int], ...] = (
    (NotFoundError, 3),
    (AlreadyExistsError, 4),
    (ConflictError, 4),
    (InvalidTransitionError, 4),
    (InvalidArgumentError, 5),
    (IntegrityError, 6),
    (ConfigurationError, 7),
    (BackendError, 8),
    (PolicyDeniedError, 9),
    (AuthenticationError, 9),
    (UserCodeError, 10),
    (ValidationFailedError, 9),
)


def exit_code_for(error: LooplineError) -> int:
    """Return the exit status for ``error``."""
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_FAILURE
