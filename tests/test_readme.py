"""Every command block of README.md runs as written.

- The first block: `./scripts/demo.sh` runs here (on the suite's own build,
  FERRY_BUILD_DIR); `./scripts/test.sh` is what CI runs (.ci/run execs it).
- "## Install" blocks (the package, `cmake --install`, the venv, systemctl)
  change the system: tests/test_install.py runs them as root inside overlay
  mounts; this test checks that they are all there for it to run.
- The quick tour and the Python example run here, in a scratch directory, on
  the default socket of a scratch XDG_RUNTIME_DIR, with the built ferry and
  ferryd first on PATH.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from ferrytest import BUILD_DIR, SOURCE_DIR, binding_env
from readme import blocks


def commands(block):
    return [line.split("#", 1)[0].strip() for line in block.text.splitlines()
            if line.split("#", 1)[0].strip()]


class Readme(unittest.TestCase):
    def test_every_block_is_run_by_a_test(self):
        bs = blocks()
        self.assertGreaterEqual(len(bs), 8)
        for b in bs:
            self.assertIn(b.lang, ("sh", "python", "text"), b)
        # README starts with exactly two commands.
        self.assertEqual(commands(bs[0]), ["./scripts/demo.sh", "./scripts/test.sh"])
        with open(os.path.join(SOURCE_DIR, ".ci", "run")) as f:
            self.assertIn("exec ./scripts/test.sh", f.read())
        run_here = [b for b in bs[1:] if b.lang != "text" and b.section != "Install"]
        install = [b for b in bs if b.section == "Install" and b.lang == "sh"]
        self.assertEqual([b.lang for b in run_here], ["sh", "python"], run_here)
        self.assertEqual(len(install), 5, install)
        with open(os.path.join(SOURCE_DIR, "tests", "test_install.py")) as f:
            self.assertTrue("install_blocks()" in f.read(), "test_install.py runs them")

    def test_demo(self):
        p = subprocess.run(["./scripts/demo.sh"], cwd=SOURCE_DIR, capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("demo: round trip OK", p.stdout)

    def test_quick_tour_and_python(self):
        bs = blocks()
        tour = next(b for b in bs if b.section == "Quick tour" and b.lang == "sh")
        py = next(b for b in bs if b.section == "Quick tour" and b.lang == "python")
        tmp = tempfile.mkdtemp(prefix="ferry-test-readme-")
        self.addCleanup(shutil.rmtree, tmp, True)
        xdg = os.path.join(tmp, "xdg")
        os.mkdir(xdg, 0o700)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FERRY_", "COMET_", "XDG_", "NOTIFY_", "LISTEN_",
                                    "JOURNAL_", "INVOCATION_"))}
        env.update(HOME=tmp, XDG_RUNTIME_DIR=xdg, XDG_STATE_HOME=os.path.join(tmp, "state"),
                   XDG_CONFIG_HOME=os.path.join(tmp, "config"), FERRY_BUILD_DIR=BUILD_DIR,
                   PATH="%s:%s:%s" % (os.path.join(BUILD_DIR, "daemon"),
                                      os.path.join(BUILD_DIR, "client"), os.environ["PATH"]))
        sock = os.path.join(xdg, "ferry", "ferryd.sock")
        self.pids = []
        self.addCleanup(self.stop_daemons)
        with open(os.path.join(tmp, "data.csv"), "w") as f:
            f.write("".join("%d,%d\n" % (i, i * i) for i in range(1, 1001)))
        with open(os.path.join(tmp, "model.pt"), "wb") as f:
            f.write(os.urandom(1 << 20))
        p = subprocess.run(["bash", "-e", "-x", "-c", tour.text], cwd=tmp, env=env,
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        self.pids += [int(x) for x in re.findall(r"in the background \(pid (\d+)\)", p.stderr)]
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stderr, r"ferryd: serving %s in the background" % re.escape(sock))
        self.assertIn("cancelled 3 (scratch, was queued)", p.stdout)
        for name in ("data.csv", "model.pt"):
            with open(os.path.join(tmp, name), "rb") as a, \
                    open(os.path.join(tmp, "out", name), "rb") as b:
                self.assertEqual(a.read(), b.read())
        # The Python example, against the same ferryd.
        penv = binding_env(env)  # the built libferry (with the sanitizer runtimes it needs)
        p = subprocess.run(["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3",
                            "-c", py.text], cwd=tmp, env=penv, capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        w = subprocess.run(["ferry", "wait", "--timeout", "30"], cwd=tmp, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(w.returncode, 0, w.stderr)
        got = subprocess.run(["ferry", "get", "my-data"], cwd=tmp, env=env,
                             capture_output=True, text=True, timeout=60)
        self.assertIn("3.0.0", got.stdout)  # 1.0.0 and 2.0.0 from the tour, 3.0.0 from Python

    def stop_daemons(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(400):
                if not os.path.exists("/proc/%d" % pid):
                    break
                time.sleep(0.05)


if __name__ == "__main__":
    unittest.main()
