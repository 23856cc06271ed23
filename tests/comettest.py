"""comettest — a ferryd on the Comet backend against the in-process Comet stand-in."""

import hashlib
import os

from comet_standin import StandIn
from ferrytest import FerryTestCase, wait_for

API_KEY = "standin-key-0123456789"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class CometTestCase(FerryTestCase):
    """setUp starts the stand-in, then ferryd with COMET_API_KEY and COMET_URL_OVERRIDE."""

    extra_env = {}

    def setUp(self):
        import shutil
        import tempfile
        self.standin_dir = tempfile.mkdtemp(prefix="ferry-standin-")
        # Cleanups run last-registered first: the directory goes after the stand-in stops.
        self.addCleanup(shutil.rmtree, self.standin_dir, True)
        self.standin = StandIn(self.standin_dir, api_key=API_KEY, seed=42)
        self.port = self.standin.start()
        self.addCleanup(self.standin.stop)
        env = {"COMET_API_KEY": API_KEY, "COMET_URL_OVERRIDE": self.standin.url,
               "COMET_WORKSPACE": "team", "COMET_PROJECT_NAME": "proj",
               "FERRY_RETRY_BASE_MS": "100", "FERRY_RETRY_CAP_MS": "1000"}
        env.update(self.extra_env)
        self.daemon_env = env
        super().setUp()

    def state(self):
        return self.standin.snapshot()

    def versions(self, name):
        for a in self.state()["artifacts"]:
            if a["name"] == name:
                return a["versions"]
        return []

    def wait_drained(self, timeout=60):
        self.daemon.cli("wait", "--timeout", str(timeout), timeout=timeout + 30)

    def wait_until(self, predicate, timeout=30, what="condition"):
        return wait_for(predicate, timeout, what=what)

    def files_of(self, version):
        return {a["fileName"]: a for a in version["assets"]}

    def assertBytes(self, version, local):
        """Every (logical path -> local file) pair is stored byte-identical."""
        assets = self.files_of(version)
        for lp, path in local.items():
            self.assertIn(lp, assets)
            self.assertEqual(assets[lp]["sha256"], sha256_file(path), lp)
            self.assertEqual(assets[lp]["uploads"], 1, "%s uploaded %d times" % (lp, assets[lp]["uploads"]))


def daemon_cpu_seconds(daemon):
    """utime + stime of the ferryd process, in seconds."""
    with open("/proc/%d/stat" % daemon.proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def daemon_rss_kib(daemon):
    with open("/proc/%d/status" % daemon.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def daemon_is_sanitized(daemon):
    with open("/proc/%d/maps" % daemon.proc.pid) as f:
        return "libasan" in f.read()
