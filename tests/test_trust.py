"""Trust boundaries between users on one node (issue 10).

A second user is played by real uids through setpriv(1): `nobody` as the
attacker, and an unnamed uid as a victim that is not root (root trusts
itself). Tests that need them are skipped, with the reason, when the suite
does not run as root or setpriv is missing.

- Clients verify the daemon: a fake ferryd of another uid is refused by the
  CLI and the Python binding (both libferry) before a byte is sent, naming
  the owner found and the owner expected.
- ferryd runs only on state it owns: a foreign or world-writable state
  directory, spool, cache or database stops it at start, naming the path; a
  symlink planted in the spool is never followed.
- ferryd reads files with the client's rights: files travel as descriptors.
- Everything ferryd creates is 0600/0700, whatever the umask.
- Connection hygiene: idle connections cannot lock the owner out, even at a
  64-descriptor limit, and refusals are logged (rate-limited).
"""

import hashlib
import json
import os
import pwd
import resource
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

import ferrytest
from comettest import CometTestCase
from ferrytest import FERRY, FERRYD, PYTHON, Daemon, FerryTestCase, wait_for

NOBODY = pwd.getpwnam("nobody") if "nobody" in {p.pw_name for p in pwd.getpwall()} else None
VICTIM_UID = 54321  # a user with no passwd entry, as on many clusters (LDAP ids)


def second_uid_reason():
    """Why tests that need a second uid cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root, to act as a second user with setpriv"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    if NOBODY is None:
        return "there is no user nobody"
    return None


def as_uid(uid, gid, argv):
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups", "--"] + argv


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree(path):
    """Every path below `path` with its size and mtime: what "no file changed" compares."""
    out = {}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


FAKE_DAEMON = textwrap.dedent("""
    # A fake ferryd: acknowledges everything it is sent, and records what it received.
    import json, os, socket, struct, sys, time
    path, record = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o777)
    s.listen(16)
    open(record + ".ready", "w").close()
    s.settimeout(60)
    got = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            c, _ = s.accept()
        except OSError:
            break
        c.settimeout(2)
        # A liar speaks first: "hello, I am ferryd, everything is delivered".
        for i in range(1, 5):
            msg = json.dumps({"id": i, "ok": True, "protocol": 2, "daemon": "ferryd/9",
                              "backend": "local", "pid": os.getpid(), "uid": 0, "job": 1,
                              "state": "done"}).encode()
            try:
                c.sendall(struct.pack(">I", len(msg)) + msg)
            except OSError:
                break
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                got += len(data)
                with open(record, "w") as f:
                    f.write(str(got))
        except OSError:
            pass
        c.close()
""")


class TrustCase(unittest.TestCase):
    def setUp(self):
        reason = second_uid_reason()
        if reason:
            self.skipTest(reason)
        self.tmp = tempfile.mkdtemp(prefix="ferry-trust-")
        os.chmod(self.tmp, 0o755)  # other uids walk through it
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.procs = []
        self.addCleanup(self._stop_procs)

    def _stop_procs(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)

    def mkdir_as(self, path, uid, gid, mode):
        os.makedirs(path, exist_ok=True)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        return path


class ClientsVerifyTheDaemon(TrustCase):
    """Acceptance 1: a fake daemon of another uid is refused, the owner named, nothing sent."""

    def setUp(self):
        super().setUp()
        self.victim_home = self.mkdir_as(os.path.join(self.tmp, "victim"), VICTIM_UID,
                                         VICTIM_UID, 0o700)
        self.checkpoint = os.path.join(self.victim_home, "ckpt.bin")
        with open(self.checkpoint, "wb") as f:
            f.write(os.urandom(4096))
        os.chown(self.checkpoint, VICTIM_UID, VICTIM_UID)
        # The attacker got there first: /tmp/ferry-<victim uid>, as the fallback path is.
        self.attack_dir = "/tmp/ferry-%d" % VICTIM_UID
        if os.path.lexists(self.attack_dir):
            shutil.rmtree(self.attack_dir)
        self.addCleanup(shutil.rmtree, self.attack_dir, True)
        self.mkdir_as(self.attack_dir, NOBODY.pw_uid, NOBODY.pw_gid, 0o755)
        self.record = os.path.join(self.mkdir_as(os.path.join(self.tmp, "rec"), NOBODY.pw_uid,
                                                 NOBODY.pw_gid, 0o755), "got")
        script = os.path.join(self.tmp, "fake.py")
        with open(script, "w") as f:
            f.write(FAKE_DAEMON)
        p = subprocess.Popen(as_uid(NOBODY.pw_uid, NOBODY.pw_gid,
                                    [PYTHON, script, os.path.join(self.attack_dir, "ferryd.sock"),
                                     self.record]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        wait_for(lambda: os.path.exists(self.record + ".ready"), 15, what="the fake daemon")
        self.before = tree(self.victim_home)

    def victim_env(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FERRY_", "XDG_", "COMET_"))}
        env.update(HOME=self.victim_home)
        return ferrytest.binding_env(env, **extra)

    def run_victim(self, argv, **extra):
        return subprocess.run(as_uid(VICTIM_UID, VICTIM_UID, argv), env=self.victim_env(**extra),
                              cwd=self.victim_home, capture_output=True, text=True, timeout=60)

    def received(self):
        try:
            with open(self.record) as f:
                return int(f.read() or 0)
        except FileNotFoundError:
            return 0

    def assertRefusedNamingOwners(self, p, what):
        self.assertNotEqual(p.returncode, 0, "%s was accepted: %s" % (what, p.stdout))
        err = p.stderr
        self.assertIn("nobody (uid %d)" % NOBODY.pw_uid, err, what)
        self.assertIn("uid %d" % VICTIM_UID, err, what)
        self.assertIn("refusing", err, what)
        self.assertEqual(self.received(), 0, "%s sent bytes to the fake daemon" % what)
        self.assertEqual(tree(self.victim_home), self.before, "%s changed the client's files" % what)
        self.assertEqual(sha256(self.checkpoint), self.before_hash)

    def test_cli_and_python_binding_refuse_a_foreign_directory(self):
        self.before_hash = sha256(self.checkpoint)
        # The fallback path, no FERRY_SOCKET and no XDG_RUNTIME_DIR: exactly the attack.
        self.assertRefusedNamingOwners(self.run_victim([FERRY, "status"]), "ferry status")
        self.assertRefusedNamingOwners(
            self.run_victim([FERRY, "log", "ckpt", self.checkpoint, "--wait"]), "ferry log")
        code = textwrap.dedent("""
            import ferry, sys
            a = ferry.Artifact("ckpt")
            a.add(sys.argv[1])
            try:
                ferry.Experiment().log_artifact(a).wait(timeout=10)
            except ferry.FerryError as e:
                sys.exit("refused: %s" % e)
            print("logged")
        """)
        p = self.run_victim([PYTHON, "-c", code, self.checkpoint])
        self.assertRefusedNamingOwners(p, "the Python binding")
        self.assertNotIn("logged", p.stdout)

    def test_a_listener_of_another_uid_in_the_clients_own_directory_is_refused(self):
        # The directory is the victim's (say, made over after the fake bound its socket):
        # the directory check passes, SO_PEERCRED does not.
        os.chown(self.attack_dir, VICTIM_UID, VICTIM_UID)
        os.chmod(self.attack_dir, 0o755)
        self.before_hash = sha256(self.checkpoint)
        p = self.run_victim([FERRY, "log", "ckpt", self.checkpoint])
        self.assertRefusedNamingOwners(p, "ferry log")
        self.assertIn("runs as", p.stderr)

    def test_a_world_writable_directory_is_refused(self):
        os.chown(self.attack_dir, VICTIM_UID, VICTIM_UID)
        os.chmod(self.attack_dir, 0o777)
        p = self.run_victim([FERRY, "status"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("writable by everyone", p.stderr)
        self.assertEqual(self.received(), 0)

    def test_a_shared_ferryd_is_trusted_only_when_named(self):
        # FERRY_DAEMON_USER=nobody: the victim chose to trust that service account.
        p = self.run_victim([FERRY, "status"], FERRY_DAEMON_USER="nobody")
        self.assertNotIn("refusing", p.stderr)
        wait_for(lambda: self.received() > 0, 10, what="the named daemon to be asked")


class DaemonRunsOnlyOnWhatItOwns(TrustCase):
    """Acceptance 2: foreign or writable state stops ferryd at start, naming it."""

    def start_refused(self, root, what, needle):
        d = Daemon(root)
        os.makedirs(root, exist_ok=True)
        p = subprocess.run([FERRYD, "--foreground"], env=d.env, capture_output=True, text=True,
                           timeout=30, cwd=root)
        self.assertNotEqual(p.returncode, 0, "ferryd started on %s" % what)
        out = p.stderr + p.stdout
        self.assertIn(needle, out, "%s: %s" % (what, out))
        return out

    def test_foreign_or_writable_state_is_refused(self):
        nobody = NOBODY.pw_uid
        cases = [
            ("state owned by nobody", "state", lambda s: os.chown(s, nobody, nobody), "nobody"),
            ("state writable by others", "state", lambda s: os.chmod(s, 0o777), "writable"),
            ("spool owned by nobody", "state/spool", lambda s: os.chown(s, nobody, nobody),
             "nobody"),
            ("spool writable by its group", "state/spool", lambda s: os.chmod(s, 0o770),
             "writable"),
            ("cache writable by others", "state/cache", lambda s: os.chmod(s, 0o777),
             "writable"),
            ("queue.db owned by nobody", "state/queue.db",
             lambda s: os.chown(s, nobody, nobody), "nobody"),
            ("queue.db writable by others", "state/queue.db", lambda s: os.chmod(s, 0o666),
             "writable"),
        ]
        for i, (what, rel, spoil, needle) in enumerate(cases):
            with self.subTest(what):
                root = os.path.join(self.tmp, "c%d" % i)
                d = Daemon(root)
                d.start()  # a good start makes every folder and the database
                self.assertEqual(d.stop(), 0)
                target = os.path.join(root, rel)
                self.assertTrue(os.path.exists(target), target)
                spoil(target)
                out = self.start_refused(root, what, needle)
                self.assertIn(target if rel != "state" else os.path.join(root, "state"), out)

    def test_a_symlink_planted_in_the_spool_is_never_followed(self):
        secret = os.path.join(self.tmp, "secret")
        with open(secret, "wb") as f:
            f.write(b"TOPSECRET root-only bytes")
        os.chmod(secret, 0o600)
        root = os.path.join(self.tmp, "d")
        d = Daemon(root)
        self.addCleanup(d.stop)
        d.start()
        d.cli("pause")
        src = os.path.join(self.tmp, "a.bin")
        with open(src, "wb") as f:
            f.write(b"the real bytes")
        d.cli("log", "planted", src)
        spool = os.path.join(root, "state", "spool")
        names = [n for n in os.listdir(spool) if len(n) == 32]
        self.assertEqual(len(names), 1, os.listdir(spool))
        victim = os.path.join(spool, names[0])
        os.unlink(victim)
        os.symlink(secret, victim)
        out = os.path.join(self.tmp, "out")
        p = d.cli("download", "planted", out, check=False)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        for rootdir, _, files in os.walk(self.tmp):
            for n in files:
                path = os.path.join(rootdir, n)
                if path == secret or not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                with open(path, "rb") as f:
                    self.assertNotIn(b"TOPSECRET", f.read(), "the secret leaked into %s" % path)
        # Delivery too reads through O_NOFOLLOW: the job fails, the secret stays where it was.
        d.cli("resume")
        d.cli("wait", "--timeout", "30", check=False)
        registry = os.path.join(root, "state", "registry")
        for rootdir, _, files in os.walk(registry):
            for n in files:
                with open(os.path.join(rootdir, n), "rb") as f:
                    self.assertNotIn(b"TOPSECRET", f.read())
        self.assertEqual(open(secret, "rb").read(), b"TOPSECRET root-only bytes")


class FilesTravelAsDescriptors(TrustCase):
    """Acceptance 3: ferryd reads what the client can read, never with its own rights."""

    def setUp(self):
        super().setUp()
        root = os.path.join(self.tmp, "d")
        # A group other users are in may connect; the daemon's secret is in its environment.
        self.daemon = Daemon(root, env={"FERRY_ALLOW_GROUP": str(NOBODY.pw_gid),
                                        "FERRY_DAEMON_MARK": "daemon-secret-4711"})
        self.addCleanup(self.daemon.stop)
        self.daemon.start()
        os.chmod(root, 0o755)

    def client(self, argv, uid=None, gid=None, **env):
        e = dict(self.daemon.env)
        e.pop("FERRY_DAEMON_MARK", None)
        e.update(env)
        if uid is not None:
            argv = as_uid(uid, gid, argv)
            e["FERRY_DAEMON_USER"] = "0"
        return subprocess.run(argv, env=e, capture_output=True, text=True, timeout=60,
                              cwd=self.tmp)

    def test_proc_self_environ_is_the_clients(self):
        p = self.client([FERRY, "log", "envx", "/proc/self/environ", "--wait", "--timeout", "30"],
                        CLIENT_MARK="client-mark-0815")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = os.path.join(self.tmp, "envout")
        self.daemon.cli("download", "envx", out)
        data = open(os.path.join(out, "environ"), "rb").read()
        self.assertIn(b"CLIENT_MARK=client-mark-0815", data)
        self.assertNotIn(b"daemon-secret-4711", data)

    def test_a_file_the_client_cannot_read_is_refused(self):
        secret = os.path.join(self.tmp, "root-only.bin")
        with open(secret, "wb") as f:
            f.write(b"only root reads this")
        os.chmod(secret, 0o600)
        p = self.client([FERRY, "log", "stolen", secret], uid=NOBODY.pw_uid, gid=NOBODY.pw_gid)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("permission denied", p.stderr.lower())
        self.assertIn(secret, p.stderr)
        self.assertEqual(self.daemon.cli_json("ls", "--all")["items"], [])
        # The same user logs its own environment: its own, not ferryd's (root's).
        p = self.client([FERRY, "log", "nobody-env", "/proc/self/environ", "--wait", "--timeout",
                         "30"], uid=NOBODY.pw_uid, gid=NOBODY.pw_gid, CLIENT_MARK="from-nobody")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = os.path.join(self.tmp, "nobody-env")
        self.daemon.cli("download", "nobody-env", out)
        data = open(os.path.join(out, "environ"), "rb").read()
        self.assertIn(b"CLIENT_MARK=from-nobody", data)
        self.assertNotIn(b"daemon-secret-4711", data)


class AllowGroup(FilesTravelAsDescriptors):
    """allow_group admits its members, by primary or supplementary group, and no one else."""

    def test_primary_and_supplementary_members_only(self):
        gid = NOBODY.pw_gid

        def status(groups):
            argv = ["setpriv", "--reuid=%d" % VICTIM_UID, "--regid=%d" % VICTIM_UID]
            argv += ["--groups=%s" % ",".join(map(str, groups))] if groups else ["--clear-groups"]
            e = dict(self.daemon.env, FERRY_DAEMON_USER="0")
            return subprocess.run(argv + ["--", FERRY, "status"], env=e, capture_output=True,
                                  text=True, timeout=60, cwd=self.tmp)

        p = status([gid])  # a supplementary member
        self.assertEqual(p.returncode, 0, p.stderr)
        p = status([])  # not a member: the socket's group mode keeps it out before ferryd does
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("permission denied", p.stderr)
        p = subprocess.run(as_uid(NOBODY.pw_uid, gid, [FERRY, "status"]),  # primary group
                           env=dict(self.daemon.env, FERRY_DAEMON_USER="0"), capture_output=True,
                           text=True, timeout=60, cwd=self.tmp)
        self.assertEqual(p.returncode, 0, p.stderr)

    test_proc_self_environ_is_the_clients = None
    test_a_file_the_client_cannot_read_is_refused = None


class Modes(FerryTestCase):
    """Acceptance 4: queue.db, spool and registry files 0600, directories 0700, under umask 0."""

    def setUp(self):
        old = os.umask(0)
        try:
            super().setUp()
        finally:
            os.umask(old)

    def assertModes(self, top):
        seen = 0
        for rootdir, dirs, files in os.walk(top):
            for n in dirs:
                p = os.path.join(rootdir, n)
                self.assertEqual(stat.S_IMODE(os.lstat(p).st_mode), 0o700, p)
                seen += 1
            for n in files:
                p = os.path.join(rootdir, n)
                self.assertEqual(stat.S_IMODE(os.lstat(p).st_mode), 0o600, p)
                seen += 1
        return seen

    def test_everything_ferryd_creates_is_private(self):
        d = self.daemon
        d.cli("pause")
        d.cli("log", "m", self.write("m.bin", os.urandom(1000)))
        state = d.state_dir
        self.assertEqual(stat.S_IMODE(os.stat(state).st_mode), 0o700)
        for n in ("queue.db", "queue.db-wal", "queue.db-shm"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(state, n)).st_mode), 0o600, n)
        self.assertGreaterEqual(self.assertModes(os.path.join(state, "spool")), 1)
        d.cli("resume")
        d.cli("wait", "--timeout", "30")
        self.assertGreaterEqual(self.assertModes(os.path.join(state, "registry")), 3)
        self.assertModes(state)


class CacheModes(CometTestCase):
    def setUp(self):
        old = os.umask(0)
        try:
            super().setUp()
        finally:
            os.umask(old)

    def test_cache_files_are_private(self):
        d = self.daemon
        d.cli("log", "c", self.write("c.bin", os.urandom(5000)), "--wait", "--timeout", "60")
        d.cli("download", "c", os.path.join(self.tmp, "o"))
        cache = os.path.join(d.state_dir, "cache")
        n = 0
        for rootdir, dirs, files in os.walk(cache):
            for x in dirs:
                self.assertEqual(stat.S_IMODE(os.lstat(os.path.join(rootdir, x)).st_mode), 0o700)
            for x in files:
                self.assertEqual(stat.S_IMODE(os.lstat(os.path.join(rootdir, x)).st_mode), 0o600)
                n += 1
        self.assertGreaterEqual(n, 1, "the download did not go through the cache")


def limit_fds(n):
    def pre():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return pre


class ConnectionHygiene(unittest.TestCase):
    """Acceptance 5: at ulimit -n 64, 200 idle connections do not lock the owner out."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-hog-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        env = {"FERRY_HELLO_TIMEOUT_MS": "60000"}  # the hogs are not swept away by time
        if second_uid_reason() is None:
            env["FERRY_ALLOW_GROUP"] = str(NOBODY.pw_gid)
        self.daemon = Daemon(self.tmp, env=env)
        self.addCleanup(self.daemon.stop)
        self.daemon.env_pre = limit_fds(64)
        os.makedirs(self.tmp, exist_ok=True)
        self.daemon._log = open(self.daemon.log_path, "ab")
        self.daemon.proc = subprocess.Popen(
            [FERRYD, "--foreground"], env=self.daemon.env, stdin=subprocess.DEVNULL,
            stdout=self.daemon._log, stderr=self.daemon._log, cwd=self.tmp,
            preexec_fn=limit_fds(64))
        wait_for(self.daemon._connectable, 15, what="ferryd to listen")
        self.hogs = []
        self.addCleanup(self._close_hogs)

    def _close_hogs(self):
        for s in self.hogs:
            s.close()

    def hog(self, n):
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect(self.daemon.socket)
            except OSError:
                s.close()
                continue
            self.hogs.append(s)

    def assertOwnerServed(self):
        t0 = time.monotonic()
        p = self.daemon.cli("status", "--json", check=False, timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, "the owner was locked out: %s\n%s"
                         % (p.stderr, self.daemon.log()[-3000:]))
        self.assertLess(took, 10)
        return json.loads(p.stdout)

    def test_two_hundred_idle_connections_of_the_owner(self):
        self.hog(200)
        for _ in range(3):
            self.assertOwnerServed()
        self.assertTrue(self.daemon.alive())
        log = self.daemon.log()
        self.assertRegex(log, r"refused|closed an idle|evict", log[-2000:])

    def test_two_hundred_idle_connections_of_another_user(self):
        reason = second_uid_reason()
        if reason:
            self.skipTest(reason)
        script = textwrap.dedent("""
            import socket, sys, time
            held = []
            for _ in range(200):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(sys.argv[1])
                    held.append(s)
                except OSError:
                    s.close()
            print(len(held), flush=True)
            time.sleep(60)
        """)
        p = subprocess.Popen(as_uid(NOBODY.pw_uid, NOBODY.pw_gid, [PYTHON, "-c", script,
                                                                     self.daemon.socket]),
                             stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.kill(), p.wait(10)))
        held = int(p.stdout.readline())
        self.assertGreater(held, 0)
        for _ in range(3):
            self.assertOwnerServed()
        log = self.daemon.log()
        self.assertIn("uid %d" % NOBODY.pw_uid, log)
        refusals = [l for l in log.splitlines() if "refused" in l]
        self.assertGreaterEqual(len(refusals), 1, log[-2000:])
        self.assertLess(len(refusals), 20, "refusals are not rate-limited:\n" + "\n".join(refusals))


if __name__ == "__main__":
    unittest.main(verbosity=2)
