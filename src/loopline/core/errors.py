"""The one error tree of loopline; every error names the thing and the fix.

    LooplineError
    ├── NotFoundError            a named thing does not exist
    ├── AlreadyExistsError       a create collided with an existing thing
    ├── InvalidArgumentError     bad input: names the field and the problem
    │   └── PathEscapeError      a path or key would leave its root
    ├── ConflictError            a concurrent change won, or state disagrees
    │   └── LeaseLostError       another runner took over a run this one was executing
    ├── InvalidTransitionError   a state machine refused a move
    ├── AuthenticationError      no credentials, or ones that are unknown, expired or revoked
    ├── PolicyDeniedError        governance said no
    │   ├── AccessDeniedError    the actor's roles do not permit the action
    │   └── UntrustedModelError  a model artifact needs a trust decision it does not have
    ├── UserCodeError            user code raised; keeps the original as __cause__
    ├── ValidationFailedError    a dataset failed its expectation suite; carries the report
    ├── IntegrityError           stored bytes or records do not match their hash
    ├── BackendError             a database or object store failed or is unreachable
    └── ConfigurationError       settings, workspace or schema revision are wrong
        └── SchemaVersionError   the database is at another revision than the code

HTTP statuses are mapped only in the API and exit codes only in the CLI.
"""

from __future__ import annotations


class LooplineError(Exception):
    """Base of every error loopline raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(LooplineError):
    """A named thing does not exist."""

    def __init__(self, kind: str, key: str, hint: str = "") -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!r} not found" + (f"; {hint}" if hint else ""))


class AlreadyExistsError(LooplineError):
    """A create collided with an existing thing."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!r} already exists")


class InvalidArgumentError(LooplineError):
    """Bad input: the message names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid {field}: {problem}")


class PathEscapeError(InvalidArgumentError):
    """A path or key given by a user would resolve outside its root."""

    def __init__(self, field: str, value: str) -> None:
        self.value = value
        super().__init__(field,
                         f"{value!r} would leave its root (no '..', absolute paths or links)")


class ConflictError(LooplineError):
    """A concurrent change won, or the stored state disagrees with the request."""


class LeaseLostError(ConflictError):
    """Another runner took over a run this runner was executing; this one must stop."""


class InvalidTransitionError(LooplineError):
    """A state machine refused a move."""

    def __init__(self, kind: str, key: str, source: str, target: str) -> None:
        self.kind = kind
        self.key = key
        self.source = source
        self.target = target
        super().__init__(f"{kind} {key!r} cannot move from {source!r} to {target!r}")


class AuthenticationError(LooplineError):
    """No credentials were given, or they are unknown, expired or revoked.

    The message never says which of these it was to the caller beyond what the caller
    already knows, so a guessed token learns nothing.
    """


class PolicyDeniedError(LooplineError):
    """A governance policy refused the action."""


class AccessDeniedError(PolicyDeniedError):
    """The actor holds no role that permits the action (on that model, when one is named)."""

    def __init__(self, actor: str, permission: str, resource: str | None = None,
                 roles: tuple[str, ...] = ()) -> None:
        self.actor = actor
        self.permission = permission
        self.resource = resource
        self.roles = roles
        where = f" on {resource}" if resource else ""
        held = ", ".join(roles) if roles else "no role"
        super().__init__(f"{actor!r} may not {permission}{where}: holds {held}; an admin can "
                         "grant a role with `loopline users grant`")


class UntrustedModelError(PolicyDeniedError):
    """Loading a model artifact was refused: it needs trust it has not been given.

    ``untrusted`` names what the artifact needs (types, or the format itself); nothing from
    the artifact ran before the refusal.
    """

    def __init__(self, flavor: str, reason: str, untrusted: tuple[str, ...] = ()) -> None:
        self.flavor = flavor
        self.reason = reason
        self.untrusted = untrusted
        super().__init__(f"refused to load a {flavor!r} model: {reason}; load it only if you "
                         "trust where it came from, by recording an audited trust decision "
                         "for this model version")


class UserCodeError(LooplineError):
    """User code raised; the original exception is kept as ``__cause__``."""


class ValidationFailedError(LooplineError):
    """A dataset version failed expectations of a suite; the message is the readable report."""

    def __init__(self, suite: str, dataset_version_id: str, failures: int, summary: str) -> None:
        self.suite = suite
        self.dataset_version_id = dataset_version_id
        self.failures = failures
        self.summary = summary
        super().__init__(summary)


class IntegrityError(LooplineError):
    """Stored bytes or records do not match their recorded hash."""


class BackendError(LooplineError):
    """A database or object store failed or cannot be reached."""


class ConfigurationError(LooplineError):
    """Settings, the workspace layout or the schema revision are not usable."""


class SchemaVersionError(ConfigurationError):
    """The database schema is at another revision than this code expects."""

    def __init__(self, message: str, current: str | None, expected: str) -> None:
        self.current = current
        self.expected = expected
        super().__init__(message)


# The stable name of each kind of error, most specific first (the first isinstance match
# wins): the API answers with it and the client rebuilds the class from it, so both read
# this one table. HTTP statuses are the API's own (``api.errors``).
ERROR_CODES: tuple[tuple[type[LooplineError], str], ...] = (
    (AuthenticationError, "unauthenticated"),
    (AccessDeniedError, "access_denied"),
    (UntrustedModelError, "untrusted_model"),
    (PolicyDeniedError, "policy_denied"),
    (NotFoundError, "not_found"),
    (AlreadyExistsError, "already_exists"),
    (InvalidTransitionError, "invalid_transition"),
    (ConflictError, "conflict"),
    (InvalidArgumentError, "invalid_argument"),
    (ValidationFailedError, "validation_failed"),
    (UserCodeError, "user_code"),
    (IntegrityError, "integrity"),
    (ConfigurationError, "configuration"),
    (BackendError, "backend_unavailable"),
)
