"""s3test — an S3-compatible store for the tests: s3rver from npm, on loopback.

``scripts/setup.sh`` installs Node.js and ``npm install``s the pinned s3rver
into ``tests/node_modules``, and Debian's python3-boto3, the independent
client the tests put and read objects with. Each S3rver runs in its own
temporary directory on 127.0.0.1, on a free port (or a given one, to come
back after an outage), and is stopped by its PID.

When node, s3rver or boto3 is missing the S3 tests are skipped with the
reason, unless CI is set: there setup installed them, so their absence fails.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
S3RVER_JS = os.path.join(HERE, "node_modules", "s3rver", "bin", "s3rver.js")
ACCESS_KEY = "S3RVER"  # the one account s3rver knows
SECRET_KEY = "S3RVER"


def missing():
    """Why the S3 tests cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (scripts/setup.sh installs Node.js)"
    if not os.path.exists(S3RVER_JS):
        return "s3rver is not installed in tests/node_modules (run scripts/setup.sh)"
    try:
        import boto3  # noqa: F401
    except ImportError:
        return "python3-boto3 is not installed (scripts/setup.sh installs it)"
    return None


def require(testcase):
    """Skip (outside CI) or fail (in CI) when the S3 tools are missing."""
    why = missing()
    if why is None:
        return
    if os.environ.get("CI"):
        raise AssertionError("S3 tests cannot run: " + why)
    raise unittest.SkipTest(why)


class S3rver:
    """One s3rver process with its own data directory."""

    def __init__(self, port=0):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="ferry-s3rver-")
        self.proc = None
        self.log_path = os.path.join(self.dir, "s3rver.log")

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=20.0):
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        # s3rver's continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider.
        env["NODE_OPTIONS"] = "--openssl-legacy-provider"
        self.proc = subprocess.Popen(
            ["node", S3RVER_JS, "-d", os.path.join(self.dir, "data"), "-a", "127.0.0.1",
             "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", self._log())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self._log().decode("utf-8", "replace")
                self.stop()
                raise AssertionError("s3rver did not start: %s" % out[-2000:])
            time.sleep(0.05)

    def _log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def requests(self):
        """How many listing pages (GET /bucket?list-type=2) s3rver served."""
        return len(re.findall(rb"Fetched bucket", self._log()))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 1}))


def ferryd_env(server, **extra):
    """The settings ferryd reads to reach `server` (as the AWS tools would)."""
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint,
           "FERRY_RETRY_BASE_MS": "100", "FERRY_RETRY_CAP_MS": "500"}
    env.update(extra)
    return env


def put_tree(s3, bucket, objects):
    """Create `bucket` (if needed) and put {key: bytes}; returns {key: ETag without quotes}."""
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except s3.exceptions.BucketAlreadyExists:
        pass
    etags = {}
    for key, body in objects.items():
        etags[key] = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    return etags
