"""Artifact: a new artifact version being described, as in Comet's SDK.

Values are checked when they are given, by libferry's own rules (the same
code the daemon and the CLI use), so a bad name, version or logical path
raises at the line that introduced it.

In-memory data (bytes, file-like objects) is streamed in 1 MiB chunks into
an unnamed temporary file of this process (in ``$TMPDIR``), never held whole
in memory; at ``log_artifact()`` its descriptor goes to ferryd, which copies
it into its spool, as it does with every file (ferryd never opens a path of
yours: libferry opens your files and hands over their descriptors).

- ``copy_to_tmp=True`` (the default): at ``add()`` time; the object may be
  closed or changed afterwards.
- ``copy_to_tmp=False``: at ``log_artifact()`` time; the object must stay open
  and unchanged until then.
"""

import io
import json
import os
import tempfile

from . import _native
from .errors import ConflictError, FerryError, InvalidArgumentError, LocalFileNotFoundError

_MAX_SYNCED_OBJECTS = 100000  # FERRY_MAX_SYNCED_OBJECTS: a version holds at most 100000 assets

__all__ = ["Artifact", "ArtifactAsset"]

CHUNK = 1 << 20
DEFAULT_DATA_NAME = "data"


class ArtifactAsset:
    """One asset of an :class:`Artifact` (read-only, like Comet's ``ArtifactAsset``)."""

    def __init__(self, remote, logical_path, size, link, metadata, asset_type, local_path_or_data):
        self._remote = remote
        self._logical_path = logical_path
        self._size = size
        self._link = link
        self._metadata = metadata
        self._asset_type = asset_type
        self._local_path_or_data = local_path_or_data

    remote = property(lambda self: self._remote)
    logical_path = property(lambda self: self._logical_path)
    size = property(lambda self: self._size)
    link = property(lambda self: self._link)
    metadata = property(lambda self: self._metadata)
    asset_type = property(lambda self: self._asset_type)
    local_path_or_data = property(lambda self: self._local_path_or_data)

    def __repr__(self):
        return ("%s(remote=%r, logical_path=%r, size=%r, link=%r, metadata=%r, asset_type=%r, "
                "local_path_or_data=%r)" % (
                    type(self).__name__, self._remote, self._logical_path, self._size,
                    self._link, self._metadata, self._asset_type, self._local_path_or_data))


class _Asset:
    """Internal: how one logical path will be sent in artifact.log."""

    __slots__ = ("logical_path", "kind", "value", "obj", "start", "size", "metadata",
                 "asset_type", "tmp", "sync_max", "sync_prefix")

    def __init__(self, logical_path, kind, value=None, obj=None, start=None, size=None,
                 metadata=None, asset_type="asset"):
        self.logical_path = logical_path
        self.kind = kind        # "file" | "data" (in self.tmp) | "remote" | "pending" (read at log)
        self.value = value      # absolute path | URI | None
        self.obj = obj          # the bytes or file-like object given to add()
        self.start = start      # its read position at add() time, when seekable
        self.size = size
        self.metadata = metadata
        self.asset_type = asset_type
        self.tmp = None         # "data": the temporary file holding it
        self.sync_max = 0       # "remote": > 0 asks ferryd to list the s3:// URI (at most this many)
        self.sync_prefix = None  # "remote" with sync: the logical_path the caller gave, or None

    def public(self):
        if self.kind == "remote":
            return ArtifactAsset(True, self.logical_path, 0, self.value, self.metadata,
                                 self.asset_type, self.value)
        local = self.value if self.kind == "file" else self.obj
        return ArtifactAsset(False, self.logical_path, self.size, None, self.metadata,
                             self.asset_type, local)

    def fill(self, builder):
        """Add this asset to a libferry builder (which opens files when logging)."""
        meta_json = _metadata_json(self.metadata, "asset metadata")
        if self.kind == "file":
            builder.add_file(self.value, self.logical_path, True, meta_json)
        elif self.kind == "remote" and self.sync_max:
            # Without a logical_path of the caller's the listed objects sit at the root.
            builder.add_remote_sync(self.value, self.sync_prefix, True, meta_json, self.sync_max)
        elif self.kind == "remote":
            builder.add_remote(self.value, self.logical_path, True, meta_json)
        else:
            if self.kind == "pending":
                _hold_data(self)
            builder.add_fd(self.tmp.fileno(), self.logical_path, True, meta_json)


def _metadata_json(metadata, what):
    """Check that `metadata` is None or a JSON-encodable dict; return its JSON text or None."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidArgumentError("%s must be a dict, not %s" % (what, type(metadata).__name__))
    try:
        return json.dumps(metadata, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError("%s must be JSON-encodable: %s" % (what, e)) from None


def _label_set(values, what):
    """Aliases or tags as a set of str (a single str is one label, not its characters)."""
    if values is None:
        return set()
    if isinstance(values, str):
        values = [values]
    try:
        items = list(values)
    except TypeError:
        raise InvalidArgumentError("%s must be an iterable of strings, not %s"
                                   % (what, type(values).__name__)) from None
    for v in items:
        if not isinstance(v, str):
            raise InvalidArgumentError("%s must be strings, not %s" % (what, type(v).__name__))
    return set(items)


def _version_str(version):
    if version is None:
        return None
    if not isinstance(version, str):
        version = str(version)  # e.g. a semantic_version.Version
    return version


def _check_str(value, what):
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentError("%s must be a string, not %s" % (what, type(value).__name__))


def _is_pathlike(x):
    return isinstance(x, (str, os.PathLike))


class Artifact:
    """A new artifact version: ``Artifact(name, artifact_type=None, version=None,
    aliases=None, metadata=None, version_tags=None)``.

    ``name``: 1..100 bytes without ``/``, ``:`` or control characters;
    ``version``: strict semver or None (the backend assigns the next major);
    ``aliases``/``version_tags``: iterables of str, kept as sets;
    ``metadata``: a JSON-encodable dict. Anything else raises a
    :class:`~ferry.errors.InvalidArgumentError` (a ``ValueError``).
    """

    def __init__(self, name, artifact_type=None, version=None, aliases=None, metadata=None,
                 version_tags=None):
        _check_str(name, "artifact name")
        if name is None:
            raise InvalidArgumentError("an artifact name is required")
        _check_str(artifact_type, "artifact type")
        version = _version_str(version)
        aliases = _label_set(aliases, "aliases")
        version_tags = _label_set(version_tags, "version tags")
        if metadata is None:
            metadata = {}
        meta_json = _metadata_json(metadata, "artifact metadata")
        with _native.artifact_builder(name, artifact_type) as b:
            b.set_version(version)
            for a in sorted(aliases):
                b.add_alias(a)
            for t in sorted(version_tags):
                b.add_tag(t)
            b.set_metadata(meta_json)
        self._name = name
        self._artifact_type = artifact_type
        self._version = version
        self._aliases = aliases
        self._version_tags = version_tags
        self._metadata = metadata
        self._assets = {}  # logical path -> _Asset, in order of addition
        self._download_local_path = None

    # ---- attributes -------------------------------------------------------

    @property
    def name(self):
        return self._name

    @property
    def artifact_type(self):
        return self._artifact_type

    @property
    def version(self):
        """The requested version (str), or None to let the backend pick the next major."""
        return self._version

    @property
    def aliases(self):
        return self._aliases

    @property
    def version_tags(self):
        return self._version_tags

    @property
    def metadata(self):
        return self._metadata

    @property
    def assets(self):
        """The assets as :class:`ArtifactAsset` objects, in the order they were added."""
        return [a.public() for a in self._assets.values()]

    @property
    def remote_assets(self):
        return [a.public() for a in self._assets.values() if a.kind == "remote"]

    @property
    def size(self):
        """Total size in bytes of the local assets known so far."""
        return sum(a.size or 0 for a in self._assets.values() if a.kind != "remote")

    @property
    def download_local_path(self):
        """The directory this artifact was downloaded to; None for a new artifact."""
        return self._download_local_path

    def __str__(self):
        return "%s(%r, artifact_type=%r)" % (type(self).__name__, self._name, self._artifact_type)

    def __repr__(self):
        return "%s(name=%r, artifact_type=%r, version=%r)" % (
            type(self).__name__, self._name, self._artifact_type, self._version)

    # ---- adding assets ----------------------------------------------------

    def _builder(self):
        return _native.artifact_builder(self._name)

    def _merge(self, batch, overwrite):
        """Put the assets of `batch` in; all or nothing. Conflicts raise unless `overwrite`."""
        if not overwrite:
            for a in batch:
                if a.logical_path in self._assets:
                    raise ConflictError(
                        "artifact %r already has an asset at %r; pass overwrite=True to "
                        "replace it" % (self._name, a.logical_path))
        for a in batch:
            # Replacing keeps the earlier asset's place, as libferry does.
            self._assets[a.logical_path] = a

    def add(self, local_path_or_data, logical_path=None, overwrite=False, copy_to_tmp=True,
            metadata=None):
        """Add a file, a directory (recursively), bytes, or a file-like object.

        A file's logical path defaults to its base name; a directory's files get
        paths relative to it (under `logical_path` when given); data defaults
        to ``"data"``. A logical path already present raises
        :class:`~ferry.errors.ConflictError` (a ``ValueError``) unless
        ``overwrite=True``, in which case the new asset replaces the old one.
        """
        _check_str(logical_path, "logical_path")
        meta_json = _metadata_json(metadata, "asset metadata")
        if _is_pathlike(local_path_or_data):
            self._add_path(os.fspath(local_path_or_data), logical_path, overwrite, metadata,
                           meta_json)
        elif isinstance(local_path_or_data, (bytes, bytearray, memoryview)) or hasattr(
                local_path_or_data, "read"):
            self._add_data(local_path_or_data, logical_path, overwrite, copy_to_tmp, metadata,
                           meta_json)
        else:
            raise TypeError("local_path_or_data must be a path, bytes or a file-like object, "
                            "not %s" % type(local_path_or_data).__name__)
        return None

    def _add_path(self, path, logical_path, overwrite, metadata, meta_json):
        with self._builder() as b:
            try:
                b.add_file(path, logical_path, True, meta_json)
            except FerryError as e:
                if e.code == "not_found":
                    raise LocalFileNotFoundError(str(e), e.code) from None
                raise
            entries = b.to_dict()["assets"]
        batch = []
        for e in entries:
            try:
                size = os.stat(e["file"]).st_size
            except OSError:
                size = None
            batch.append(_Asset(e["logical_path"], "file", value=e["file"], size=size,
                                metadata=metadata))
        self._merge(batch, overwrite)

    def _add_data(self, data, logical_path, overwrite, copy_to_tmp, metadata, meta_json):
        if logical_path is None:
            logical_path = DEFAULT_DATA_NAME
        with self._builder() as b:  # the logical path and metadata by libferry's rules
            b.add_remote("ferry:data", logical_path, True, meta_json)
        if not overwrite and logical_path in self._assets:
            self._merge([_Asset(logical_path, "pending")], False)  # raises
        if isinstance(data, bytearray):
            data = bytes(data)  # a snapshot of mutable data
        start = None
        if not isinstance(data, (bytes, memoryview)):
            try:
                if data.seekable():
                    start = data.tell()
            except (AttributeError, OSError, ValueError):
                start = None
        asset = _Asset(logical_path, "pending", obj=data, start=start, metadata=metadata)
        if copy_to_tmp:
            _hold_data(asset)
        self._merge([asset], overwrite)

    def add_remote(self, uri, logical_path=None, overwrite=False, asset_type=None, metadata=None,
                   sync_mode=True, max_synced_objects=10000):
        """Add a remote asset: the URI is recorded, not uploaded.

        The logical path defaults to the URI's last path segment, or
        ``"remote"``. With `sync_mode` (the default) an ``s3://`` URI is
        listed by ferryd when the version is delivered, as Comet's SDK does:
        each object under it becomes one remote asset (logical paths: the
        keys below the prefix, under `logical_path` when given) with
        ``s3_platform``, ``synced``, ``checksum`` (the ETag), ``file_size``,
        ``s3_path`` and, in versioned buckets, ``version_id`` in its metadata.
        More than `max_synced_objects` objects, or a listing that fails for
        good, leaves one remote asset with ``"synced": False`` and
        ``error_message``; ``wait()`` logs that warning. ferryd lists with
        its own AWS credentials (its environment, its user's ``~/.aws``).
        Other schemes (``gs://``, ``https://``) are recorded as they are.
        """
        _check_str(uri, "uri")
        _check_str(logical_path, "logical_path")
        _check_str(asset_type, "asset_type")
        meta_json = _metadata_json(metadata, "asset metadata")
        sync = bool(sync_mode) and uri is not None and uri[:5].lower() == "s3://"
        if sync and (isinstance(max_synced_objects, bool) or
                     not isinstance(max_synced_objects, int) or
                     not 1 <= max_synced_objects <= _MAX_SYNCED_OBJECTS):
            raise InvalidArgumentError("max_synced_objects must be an int from 1 to %d"
                                       % _MAX_SYNCED_OBJECTS)
        with self._builder() as b:
            if sync:
                b.add_remote_sync(uri, logical_path, True, meta_json, max_synced_objects)
            else:
                b.add_remote(uri, logical_path, True, meta_json)
            entry = b.to_dict()["assets"][0]
        asset = _Asset(entry["logical_path"], "remote", value=uri, size=0, metadata=metadata,
                       asset_type=asset_type or "asset")
        if sync:
            asset.sync_max = max_synced_objects
            asset.sync_prefix = logical_path
        self._merge([asset], overwrite)
        return None

    # ---- logging ----------------------------------------------------------

    def _native_builder(self):
        """A libferry artifact describing this version (the caller closes it)."""
        meta_json = _metadata_json(self._metadata, "artifact metadata")
        b = _native.artifact_builder(self._name, self._artifact_type)
        try:
            b.set_version(self._version)
            for a in sorted(_label_set(self._aliases, "aliases")):
                b.add_alias(a)
            for t in sorted(_label_set(self._version_tags, "version tags")):
                b.add_tag(t)
            if meta_json is not None and self._metadata:
                b.set_metadata(meta_json)
            for a in self._assets.values():
                a.fill(b)
        except BaseException:
            b.close()
            raise
        return b


def _hold_data(asset):
    """Copy the asset's data into a temporary file of this process; the asset becomes "data"."""
    data = asset.obj
    if asset.kind == "pending" and asset.start is not None:
        data.seek(asset.start)
    tmp = tempfile.TemporaryFile(prefix="ferry-data-")
    try:
        asset.size = _copy(data, tmp)
        tmp.flush()
    except BaseException:
        tmp.close()
        raise
    asset.kind, asset.tmp = "data", tmp


def _copy(data, out):
    """Write all of `data` (bytes-like or a binary/text file-like) to `out`; return the size."""
    if isinstance(data, (bytes, memoryview)):
        view = memoryview(data).cast("B")
        for off in range(0, len(view), CHUNK):
            _write_all(out, view[off:off + CHUNK])
        return len(view)
    size = 0
    readinto = getattr(data, "readinto", None)
    if readinto is not None and not isinstance(data, io.TextIOBase):
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = readinto(view)
            if n is None:  # non-blocking stream with nothing ready: read() blocks less oddly
                continue
            if n == 0:
                return size
            _write_all(out, view[:n])
            size += n
    while True:
        chunk = data.read(CHUNK)
        if chunk is None:
            continue
        if not chunk:
            return size
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        _write_all(out, chunk)
        size += len(chunk)


def _write_all(out, b):
    view = memoryview(b)
    while len(view):
        n = out.write(view)
        view = view[n:]
