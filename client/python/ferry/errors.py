"""Exceptions of the ferry binding.

Every error is a :class:`FerryError` whose ``code`` is the wire name of
libferry's error table (``"invalid_argument"``, ``"not_found"``, ...) and
whose message is the one sentence that libferry or ferryd wrote. Where
Comet's SDK raises a built-in exception type, the ferry class also derives
from it, so ``except ValueError`` keeps working after the import line changed.
"""

__all__ = [
    "FerryError",
    "InvalidArgumentError",
    "ConflictError",
    "NotFoundError",
    "LocalFileNotFoundError",
    "PermissionDeniedError",
    "NotReadyError",
    "ConnectError",
    "ConnectionLostError",
    "FerryTimeoutError",
    "FailedError",
    "LibraryNotFoundError",
    "error_for_code",
]


class FerryError(Exception):
    """A refusal or failure of ferry; ``code`` names it, ``str()`` explains it."""

    default_code = "internal"

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message

    def __str__(self):
        return self.message


class InvalidArgumentError(FerryError, ValueError):
    """A value that ferry refuses: bad name, non-dict metadata, bad semver, ..."""

    default_code = "invalid_argument"


class ConflictError(FerryError, ValueError):
    """Something already exists: an asset's logical path, a version, a differing file."""

    default_code = "exists"


class NotFoundError(FerryError, LookupError):
    """No such artifact, version or experiment."""

    default_code = "not_found"


class LocalFileNotFoundError(NotFoundError, FileNotFoundError):
    """A local path given to :meth:`Artifact.add` does not exist."""

    def __init__(self, message, code=None):
        FerryError.__init__(self, message, code)


class PermissionDeniedError(FerryError, PermissionError):
    default_code = "permission_denied"

    def __init__(self, message, code=None):
        FerryError.__init__(self, message, code)


class NotReadyError(FerryError):
    """The artifact version exists but is not complete (not CLOSED) yet."""

    default_code = "not_ready"


class ConnectError(FerryError, ConnectionError):
    """ferryd is not running or cannot be reached; the message says how to start it."""

    default_code = "connect_failed"

    def __init__(self, message, code=None):
        FerryError.__init__(self, message, code)


class ConnectionLostError(FerryError, ConnectionError):
    """The connection to ferryd broke in the middle of a request."""

    default_code = "connection_closed"

    def __init__(self, message, code=None):
        FerryError.__init__(self, message, code)


class FerryTimeoutError(FerryError, TimeoutError):
    default_code = "timeout"

    def __init__(self, message, code=None):
        FerryError.__init__(self, message, code)


class FailedError(FerryError):
    """Waited-for jobs ended in the failed state."""

    default_code = "failed"


class LibraryNotFoundError(FerryError, ImportError):
    """libferry.so could not be loaded (code ``"library_not_found"``)."""

    default_code = "library_not_found"

    def __init__(self, message, code=None):
        FerryError.__init__(self, message, code)


_BY_CODE = {
    "invalid_argument": InvalidArgumentError,
    "exists": ConflictError,
    "not_found": NotFoundError,
    "permission_denied": PermissionDeniedError,
    "not_ready": NotReadyError,
    "connect_failed": ConnectError,
    "connection_closed": ConnectionLostError,
    "io_error": FerryError,
    "timeout": FerryTimeoutError,
    "failed": FailedError,
}


def error_for_code(code, message):
    """The exception instance for the wire name `code` with `message`."""
    cls = _BY_CODE.get(code, FerryError)
    return cls(message, code)
