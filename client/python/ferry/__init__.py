"""ferry: Comet-style artifact logging through the node's ferryd daemon.

Change ``from comet_ml import Artifact, Experiment`` to
``from ferry import Artifact, Experiment``: versions are committed to ferryd's
durable queue and uploaded by the daemon, also while the network is down.
The protocol is spoken by libferry (loaded with ctypes); see README.md.
"""

from .artifact import Artifact, ArtifactAsset
from .errors import (ConflictError, ConnectError, ConnectionLostError, FailedError, FerryError,
                     FerryTimeoutError, InvalidArgumentError, LibraryNotFoundError,
                     LocalFileNotFoundError, NotFoundError, NotReadyError)
from .experiment import (ExistingExperiment, Experiment, LoggedArtifact, LoggedArtifactAsset,
                         get_artifact, wait)

__version__ = "0.1.0"

__all__ = [
    "Artifact", "ArtifactAsset", "Experiment", "ExistingExperiment", "LoggedArtifact",
    "LoggedArtifactAsset", "FerryError", "InvalidArgumentError", "ConflictError",
    "NotFoundError", "LocalFileNotFoundError", "NotReadyError", "ConnectError",
    "ConnectionLostError", "FerryTimeoutError", "FailedError", "LibraryNotFoundError",
    "get_artifact", "wait", "status",
]


def status():
    """ferryd's queue state (the reply of op ``status``) as a dict."""
    from . import _native
    reply = _native.request("status")
    reply.pop("id", None)
    reply.pop("ok", None)
    return reply
