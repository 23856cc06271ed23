"""Experiment, ExistingExperiment and LoggedArtifact, as in Comet's SDK.

An experiment is created (or adopted, given a key) in ferryd when the object is
made; ``log_artifact`` returns as soon as ferryd has committed the version to
its durable queue, and uploads go on in the daemon after the process exits.
"""

import logging
import os

from . import _native
from .artifact import Artifact, _Asset
from .errors import FailedError, FerryTimeoutError, InvalidArgumentError, NotReadyError

__all__ = ["Experiment", "ExistingExperiment", "LoggedArtifact", "LoggedArtifactAsset"]

KEY_ENV = ("FERRY_EXPERIMENT_KEY", "COMET_EXPERIMENT_KEY")

_log = logging.getLogger("ferry")


def _env_key():
    for var in KEY_ENV:
        value = os.environ.get(var)
        if value:
            return value
    return None


def _split_spec(spec):
    """[workspace/]name[:version_or_alias] -> (workspace, name, version_or_alias)."""
    ws = vo = None
    if "/" in spec:
        ws, spec = spec.split("/", 1)
    if ":" in spec:
        spec, vo = spec.split(":", 1)
    return ws, spec, vo


def _pick(parsed, given, what):
    if parsed is not None and given is not None and parsed != given:
        raise InvalidArgumentError("the artifact name says %s %r but %s=%r was given"
                                   % (what, parsed, what, given))
    return parsed if parsed is not None else given


_STRATEGIES = {
    False: "fail", None: "fail", "FAIL": "fail",
    "PRESERVE": "preserve",
    True: "overwrite", "OVERWRITE": "overwrite",
}


def _overwrite_mode(strategy):
    key = strategy.upper() if isinstance(strategy, str) else strategy
    if isinstance(key, bool) or key is None or isinstance(key, str):
        mode = _STRATEGIES.get(key)
        if mode is not None:
            return mode
    raise InvalidArgumentError("overwrite_strategy must be False, \"FAIL\", \"PRESERVE\", "
                               "True or \"OVERWRITE\", not %r" % (strategy,))


class Experiment:
    """``Experiment(api_key=None, project_name=None, workspace=None, *, experiment_key=None, **kw)``.

    The key is `experiment_key`, else ``$FERRY_EXPERIMENT_KEY``, else
    ``$COMET_EXPERIMENT_KEY``, else a new one from ferryd: processes that share
    the key (the ranks of a distributed job) log into one experiment.
    `project_name`/`workspace` default to ``$COMET_PROJECT_NAME`` /
    ``$COMET_WORKSPACE``, then to ferryd's configuration. `api_key` and Comet's
    other arguments (``log_code``, ``auto_metric_logging``, ..., positional or
    keyword) are accepted and ignored: ferryd holds the credentials.
    Unlike Comet, a key that names an existing experiment adopts it.
    """

    def __init__(self, api_key=None, project_name=None, workspace=None, *comet_flags,
                 experiment_key=None, **kwargs):
        project_name = project_name or os.environ.get("COMET_PROJECT_NAME") or None
        workspace = workspace or os.environ.get("COMET_WORKSPACE") or None
        key = experiment_key or _env_key()
        args = {}
        if workspace is not None:
            args["workspace"] = workspace
        if project_name is not None:
            args["project"] = project_name
        name = kwargs.get("experiment_name")
        if name is not None:
            args["name"] = name
        if key is not None:
            args["key"] = key
        reply = _native.request("experiment.create", args)
        self._key = reply["key"]
        self._workspace = reply.get("workspace")
        self._project_name = reply.get("project")
        self._name = name
        self._jobs = []
        self.ended = False

    # ---- identity ---------------------------------------------------------

    def get_key(self):
        return self._key

    @property
    def id(self):
        return self._key

    @property
    def workspace(self):
        return self._workspace

    @property
    def project_name(self):
        return self._project_name

    def get_name(self):
        return self._name

    @property
    def jobs(self):
        """Queue ids of the versions this object logged, oldest first."""
        return list(self._jobs)

    def __repr__(self):
        return "%s(key=%r, workspace=%r, project_name=%r)" % (
            type(self).__name__, self._key, self._workspace, self._project_name)

    # ---- artifacts --------------------------------------------------------

    def log_artifact(self, artifact):
        """Queue a new version of `artifact`; return a :class:`LoggedArtifact`.

        Returns once ferryd has committed the version durably (files
        snapshotted into its spool). The version number may not be assigned
        yet (``version`` is the requested one or None, ``state`` is
        ``"QUEUED"``): call ``.wait()`` on the result to block until it is
        delivered and read the assigned version.
        """
        if not isinstance(artifact, Artifact):
            raise TypeError("log_artifact takes a ferry.Artifact, not %s"
                            % type(artifact).__name__)
        builder = artifact._native_builder()
        try:
            reply = _native.log(builder, self._key, self._workspace or None,
                                self._project_name or None)
        finally:
            builder.close()
        job = reply["job"]
        self._jobs.append(job)
        assets = [LoggedArtifactAsset(a.logical_path, a.size if not a.remote else 0, a.remote,
                                      a.link, a.metadata, a.asset_type)
                  for a in artifact.assets]
        return LoggedArtifact({
            "workspace": self._workspace, "project": self._project_name,
            "name": artifact.name, "type": artifact.artifact_type or "other",
            "version": artifact.version, "aliases": sorted(artifact.aliases),
            "version_tags": sorted(artifact.version_tags), "artifact_tags": [],
            "metadata": dict(artifact.metadata or {}), "size": reply.get("bytes"),
            "experiment": reply.get("experiment", self._key), "state": "QUEUED",
            "uploaded": False, "job": job,
        }, assets=assets)

    def get_artifact(self, artifact_name, workspace=None, project_name=None,
                     version_or_alias=None):
        """The :class:`LoggedArtifact` named ``[workspace/]name[:version_or_alias]``.

        Without a version or alias: the latest. The workspace defaults to this
        experiment's. `project_name` is accepted for Comet compatibility (ferry
        names artifacts by workspace and name). Not found raises
        :class:`~ferry.errors.NotFoundError`.
        """
        return get_artifact(artifact_name, workspace or self._workspace, version_or_alias)

    # ---- end --------------------------------------------------------------

    def wait(self, timeout=None):
        """Block until this experiment's versions are delivered (or `timeout` s pass).

        Raises :class:`~ferry.errors.FerryTimeoutError` on timeout and
        :class:`~ferry.errors.FailedError` when a version failed.
        """
        return wait(self._jobs, timeout) if self._jobs else None

    def end(self, wait=False, timeout=None):
        """End the experiment. Uploads go on in ferryd after the process exits;
        with ``wait=True`` block until this experiment's versions are delivered
        (see :meth:`wait`)."""
        self.ended = True
        if wait:
            self.wait(timeout)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.end()
        return False


class ExistingExperiment(Experiment):
    """``ExistingExperiment(api_key=None, previous_experiment=KEY, **kwargs)``: adopt `KEY`
    (default: ``$FERRY_EXPERIMENT_KEY`` / ``$COMET_EXPERIMENT_KEY``)."""

    def __init__(self, api_key=None, previous_experiment=None, **kwargs):
        key = previous_experiment or kwargs.pop("experiment_key", None) or _env_key()
        if key is None:
            raise InvalidArgumentError(
                "ExistingExperiment needs previous_experiment=KEY (or FERRY_EXPERIMENT_KEY "
                "or COMET_EXPERIMENT_KEY in the environment)")
        super().__init__(api_key=api_key, experiment_key=key, **kwargs)


class LoggedArtifactAsset:
    """One asset of a logged version."""

    def __init__(self, logical_path, size, remote, link, metadata, asset_type="asset"):
        self.logical_path = logical_path
        self.size = size
        self.remote = remote
        self.link = link
        self.metadata = metadata
        self.asset_type = asset_type

    def __repr__(self):
        return "%s(logical_path=%r, size=%r, remote=%r, link=%r, metadata=%r)" % (
            type(self).__name__, self.logical_path, self.size, self.remote, self.link,
            self.metadata)


class LoggedArtifact:
    """A version in ferryd's queue or on the backend (Comet's ``LoggedArtifact``).

    Attributes: ``name``, ``artifact_type``, ``version`` (str; None while a
    version logged without one is queued), ``aliases``, ``version_tags``,
    ``artifact_tags`` (frozensets), ``metadata`` (dict), ``size``,
    ``workspace``, ``project_name``, ``source_experiment_key``, ``assets``,
    ``remote_assets``, ``state`` ("QUEUED", "CLOSED", ...), ``uploaded``,
    ``job`` (queue id, when the version was logged through this node).
    """

    def __init__(self, info, assets=None):
        self._set(info, assets)

    def _set(self, info, assets=None):
        self._info = dict(info)
        self.name = info.get("name")
        self.artifact_type = info.get("type")
        self.version = info.get("version")
        self.aliases = frozenset(info.get("aliases") or ())
        self.version_tags = frozenset(info.get("version_tags") or ())
        self.artifact_tags = frozenset(info.get("artifact_tags") or ())
        self.metadata = dict(info.get("metadata") or {})
        self.size = info.get("size")
        self.workspace = info.get("workspace")
        self.project_name = info.get("project")
        self.source_experiment_key = info.get("experiment")
        self.state = info.get("state")
        self.uploaded = bool(info.get("uploaded"))
        self.job = info.get("job")
        if assets is None:
            assets = [LoggedArtifactAsset(a.get("logical_path"), a.get("size"),
                                          bool(a.get("remote")), a.get("link"), a.get("metadata"))
                      for a in info.get("assets") or ()]
        self.assets = assets

    @property
    def remote_assets(self):
        return [a for a in self.assets if a.remote]

    def _spec(self):
        spec = self.name
        if self.workspace:
            spec = "%s/%s" % (self.workspace, spec)
        if self.version:
            spec = "%s:%s" % (spec, self.version)
        return spec

    def __str__(self):
        return "%s(%r, artifact_type=%r)" % (type(self).__name__, self._spec(), self.artifact_type)

    def __repr__(self):
        return "%s(name=%r, artifact_type=%r, version=%r, workspace=%r, state=%r, job=%r)" % (
            type(self).__name__, self.name, self.artifact_type, self.version, self.workspace,
            self.state, self.job)

    def _resolve(self):
        """Fill in the version of a queued version logged without one, when it is known."""
        if self.version is not None or self.job is None:
            return
        for item in _native.request("ls", {"state": "all"})["items"]:
            if item.get("job") == self.job:
                if item.get("version"):
                    self.version = item["version"]
                break

    def refresh(self):
        """Read this version again from ferryd (state, assigned version, assets)."""
        self._resolve()
        if self.version is None:
            # Still queued without a version: the queue holds it under the bare name.
            info = _native.get(self._get_args(None))
            if info.get("job") != self.job:
                raise NotReadyError("version of %r logged as job %s has no number yet and is "
                                    "not the newest queued one; call wait() first"
                                    % (self.name, self.job))
        else:
            info = _native.get(self._get_args(self.version))
        job = self.job
        self._set(info)
        if self.job is None:
            self.job = job
        return self

    def _get_args(self, version):
        args = {"name": self.name}
        if self.workspace:
            args["workspace"] = self.workspace
        if version:
            args["version_or_alias"] = version
        return args

    def wait(self, timeout=None):
        """Block until this version is delivered, then refresh it; returns self.

        Raises :class:`~ferry.errors.FerryTimeoutError` on timeout and
        :class:`~ferry.errors.FailedError` when the delivery failed.
        """
        if self.job is not None:
            wait([self.job], timeout)
        return self.refresh()

    def download(self, path=None, overwrite_strategy=False):
        """Download the files of this version into `path` (default: the current
        directory); return an :class:`Artifact` whose ``download_local_path`` is it.

        `overwrite_strategy`: False/"FAIL" (an existing file with other content
        raises :class:`~ferry.errors.ConflictError`; an identical one is kept),
        "PRESERVE" (keep existing files), True/"OVERWRITE" (replace them).
        Remote assets are listed on the result, not fetched, except synced S3
        objects (``add_remote`` with ``sync_mode``), which ferryd fetches.
        """
        mode = _overwrite_mode(overwrite_strategy)
        directory = os.path.abspath(os.fspath(path) if path is not None else os.getcwd())
        self._resolve()
        if self.version is None:
            self.refresh()  # raises unless the bare name resolves to this queued version
        spec = "%s%s%s" % (self.workspace + "/" if self.workspace else "", self.name,
                           ":" + self.version if self.version else "")
        reply = _native.download(spec, directory, mode)
        result = Artifact(self.name, self.artifact_type)
        placed = {f["logical_path"]: f for f in reply.get("files", [])}
        for a in self.assets:
            # Synced S3 objects were fetched and placed like files; other remote ones skipped.
            if a.remote and placed.get(a.logical_path, {}).get("action", "skipped") == "skipped":
                result._assets[a.logical_path] = _Asset(a.logical_path, "remote", value=a.link,
                                                        size=0, metadata=a.metadata)
            else:
                f = placed.get(a.logical_path, {})
                local = f.get("path") or os.path.join(directory, a.logical_path)
                result._assets[a.logical_path] = _Asset(a.logical_path, "file", value=local,
                                                        size=f.get("size", a.size),
                                                        metadata=a.metadata)
        for lp, f in placed.items():
            if lp not in result._assets:
                result._assets[lp] = _Asset(lp, "file", value=f.get("path"), size=f.get("size"))
        result._download_local_path = reply.get("dir", directory)
        return result


def get_artifact(name, workspace=None, version_or_alias=None):
    """Look up ``[workspace/]name[:version_or_alias]`` in ferryd (queue, then backend)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("an artifact name is required")
    ws, bare, vo = _split_spec(name)
    args = {"name": bare}
    parsed_ws = ws
    ws = parsed_ws if parsed_ws is not None else workspace
    vo = _pick(vo, version_or_alias, "version_or_alias")
    if ws:
        args["workspace"] = ws
    if vo:
        args["version_or_alias"] = vo
    return LoggedArtifact(_native.get(args))


def wait(jobs=None, timeout=None):
    """Wait for queue jobs (all when None); raise on timeout or failed jobs.

    Returns the daemon's counts ``{"drained", "pending", "failed"}``.
    """
    args = {}
    if jobs:
        args["jobs"] = list(jobs)
    if timeout is not None:
        args["timeout_ms"] = max(1, int(timeout * 1000))
    reply = _native.request("wait", args, timeout_ms=0)
    for w in reply.get("warnings") or ():
        # e.g. an S3 listing that fell back to one unsynced remote asset
        for line in str(w.get("message", "")).splitlines():
            _log.warning("%s (job %s): %s", w.get("name"), w.get("job"), line)
    if not reply.get("drained"):
        raise FerryTimeoutError("%d job%s still queued or running after %g s"
                                % (reply.get("pending", 0),
                                   "" if reply.get("pending") == 1 else "s", timeout or 0))
    if reply.get("failed"):
        raise FailedError("%d job%s failed; see `ferry status`"
                          % (reply["failed"], "" if reply["failed"] == 1 else "s"))
    return reply
