"""A PEP 517/660 build backend for the ferry binding, standard library only.

pip builds in an isolated environment; a backend that needs setuptools would
make pip download it, which fails on nodes without access to a package index.
This one writes the pure-Python wheel (ferry/*.py) by itself. Metadata comes
from the [project] table of pyproject.toml.
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

try:
    import tomllib
except ImportError:  # Python < 3.11: the simple key = "value" lines of [project]
    tomllib = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "ferry"
TAG = "py3-none-any"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _project():
    path = os.path.join(ROOT, "pyproject.toml")
    if tomllib is not None:
        with open(path, "rb") as f:
            return tomllib.load(f)["project"]
    project, section = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*\[([^\]]+)\]\s*$", line)
            if m:
                section = m.group(1).strip()
                continue
            m = re.match(r'\s*([A-Za-z0-9_-]+)\s*=\s*"([^"]*)"\s*$', line)
            if section == "project" and m:
                project[m.group(1)] = m.group(2)
    return project


def _dist_name(p):
    return p["name"].replace("-", "_")


def _metadata(p):
    lines = ["Metadata-Version: 2.1", "Name: %s" % p["name"], "Version: %s" % p["version"]]
    if p.get("description"):
        lines.append("Summary: %s" % p["description"])
    if p.get("requires-python"):
        lines.append("Requires-Python: %s" % p["requires-python"])
    for c in p.get("classifiers", []):
        lines.append("Classifier: %s" % c)
    body = ""
    readme = os.path.join(ROOT, p.get("readme", "README.md"))
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            body = "\n" + f.read()
    return "\n".join(lines) + "\n" + body


def _package_files():
    """(archive name, absolute path) of the package's Python sources, sorted."""
    out = []
    base = os.path.join(ROOT, PACKAGE)
    for d, dirs, files in os.walk(base):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py") or name == "py.typed":
                full = os.path.join(d, name)
                out.append((os.path.relpath(full, ROOT).replace(os.sep, "/"), full))
    return out


class _Wheel:
    def __init__(self, path):
        self.zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED)
        self.record = []

    def add(self, arcname, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        info = zipfile.ZipInfo(arcname, FIXED_TIME)
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self.record.append("%s,sha256=%s,%d" % (arcname, digest, len(data)))

    def close(self, distinfo):
        record = distinfo + "/RECORD"
        self.record.append(record + ",,")
        info = zipfile.ZipInfo(record, FIXED_TIME)
        info.external_attr = 0o644 << 16
        self.zip.writestr(info, "\n".join(self.record) + "\n")
        self.zip.close()


def _build(wheel_directory, editable):
    p = _project()
    dist = _dist_name(p)
    distinfo = "%s-%s.dist-info" % (dist, p["version"])
    filename = "%s-%s-%s.whl" % (dist, p["version"], TAG)
    w = _Wheel(os.path.join(wheel_directory, filename))
    if editable:
        # PEP 660: a .pth file puts the source tree on sys.path.
        w.add("__editable__.%s.pth" % dist, ROOT + "\n")
    else:
        for arcname, full in _package_files():
            with open(full, "rb") as f:
                w.add(arcname, f.read())
    w.add(distinfo + "/METADATA", _metadata(p))
    w.add(distinfo + "/WHEEL", "Wheel-Version: 1.0\nGenerator: ferry_build\n"
          "Root-Is-Purelib: true\nTag: %s\n" % TAG)
    w.close(distinfo)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _build(wheel_directory, editable=False)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _build(wheel_directory, editable=True)


def build_sdist(sdist_directory, config_settings=None):
    p = _project()
    base = "%s-%s" % (_dist_name(p), p["version"])
    filename = base + ".tar.gz"
    names = [("pyproject.toml", os.path.join(ROOT, "pyproject.toml")),
             ("_build/ferry_build.py", os.path.abspath(__file__))]
    if os.path.exists(os.path.join(ROOT, "README.md")):
        names.append(("README.md", os.path.join(ROOT, "README.md")))
    names += _package_files()
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for arcname, full in names:
            with open(full, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo("%s/%s" % (base, arcname))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        meta = _metadata(p).encode("utf-8")
        info = tarfile.TarInfo("%s/PKG-INFO" % base)
        info.size = len(meta)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(meta))
    return filename
