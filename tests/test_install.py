"""The Debian package and the installed files, as README's Install section makes them.

- `./scripts/package.sh` (README's command) runs `cpack -G DEB`; the package
  holds the binaries, libferry.so.0 (soname, links), ferry.h, ferry.pc, the
  Python binding, the system and user units, the man pages; its metadata
  names its dependencies, a shlibs file and an ldconfig trigger.
- Extracted into a scratch root: the binaries run, a C program builds with
  `pkg-config --cflags --libs ferry` and talks to the packaged ferryd, and
  Debian's /usr/bin/python3 imports the packaged binding, which loads
  libferry.so.0 through the loader, and logs through the packaged ferryd.
- As root, README's Install section for real, every block as written
  (`apt install ./build-deb/ferry_*.deb`, `cmake --install build`, a venv,
  `systemctl enable`), inside a private mount namespace whose /usr, /etc and
  /var are overlays (nothing reaches the machine): then Debian's python3
  imports the binding with no help at all (ldconfig ran), pkg-config finds
  ferry, the user "ferry" exists, the units are enabled, and systemd-analyze
  verifies the installed units. systemctl runs offline there (no manager is
  touched): `--now` is dropped and `--user` enables for every user.
- systemd-analyze verify passes on the units (as installed, pointing at the
  built ferryd), with no warning.

The package is built from a release tree of its own (build-deb/, a /usr
prefix); in the sanitizer build the package tests are skipped (they test the
release build's package).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from ferrytest import BUILD_DIR, FERRYD, PROTOCOL, SOURCE_DIR, RawClient, wait_for
from readme import install_blocks

PACKAGE_DIR = os.path.join(SOURCE_DIR, "build-deb")
MULTIARCH = subprocess.run(["gcc", "-dumpmachine"], capture_output=True,
                           text=True).stdout.strip() or "x86_64-linux-gnu"
LIBDIR = "usr/lib/" + MULTIARCH
PYTHON = "/usr/bin/python3"


def sanitized_build():
    try:
        with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
            return "FERRY_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


def clean_env(**extra):
    """An environment without the test harness's hints (no FERRY_*, no LD_*, no PYTHON*)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 600)
    p = subprocess.run(cmd, **kw)
    if p.returncode != 0:
        raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s"
                             % (cmd if isinstance(cmd, str) else " ".join(cmd), p.returncode,
                                p.stdout, p.stderr))
    return p


C_PROGRAM = r"""
#include <stdio.h>
#include <ferry.h>

int main(void)
{
        struct ferry_client *c = NULL;
        char *json = NULL;
        int rc = ferry_connect(&c, NULL, 5000);

        if (rc == 0)
                rc = ferry_status(c, &json);
        if (rc != 0) {
                fprintf(stderr, "%s\n", c ? ferry_last_error(c) : ferry_strerror(rc));
                ferry_close(c);
                return 1;
        }
        printf("%s %s\n", ferry_backend_name(c), json);
        ferry_free(json);
        ferry_close(c);
        return 0;
}
"""

PY_PROGRAM = r"""
import json, sys
import ferry, ferry._native as native
from ferry import Artifact, Experiment
exp = Experiment(project_name="packaged")
art = Artifact("from-package", artifact_type="dataset")
art.add(sys.argv[1])
exp.log_artifact(art)
exp.end()
print(json.dumps({"module": ferry.__file__, "lib": native.library_path()}))
"""


def mapped_libferry(pid):
    with open("/proc/%d/maps" % pid) as f:
        return sorted({line.split()[-1] for line in f if "libferry.so" in line})


@unittest.skipIf(sanitized_build(), "the package is built and checked from the release build")
class Package(unittest.TestCase):
    deb = None

    @classmethod
    def setUpClass(cls):
        # README's command, as written, from the source tree.
        p = run(["./scripts/package.sh"], cwd=SOURCE_DIR, timeout=900)
        debs = glob.glob(os.path.join(PACKAGE_DIR, "ferry_*.deb"))
        assert len(debs) == 1, (debs, p.stdout)
        cls.deb = debs[0]
        cls.contents = run(["dpkg-deb", "-c", cls.deb]).stdout

    def setUp(self):
        self.sysusers_before = os.path.exists("/usr/lib/sysusers.d/ferry.conf")
        self.tmp = tempfile.mkdtemp(prefix="ferry-test-install-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def field(self, name):
        return run(["dpkg-deb", "-f", self.deb, name]).stdout.strip()

    def test_contents_and_metadata(self):
        self.assertRegex(os.path.basename(self.deb), r"^ferry_0\.1\.0_\w+\.deb$")
        paths = {line.split()[5].lstrip(".") : line for line in self.contents.splitlines()}
        for path in ("/usr/bin/ferryd", "/usr/bin/ferry", "/usr/include/ferry.h",
                     "/%s/libferry.so.0.1.0" % LIBDIR, "/%s/libferry.a" % LIBDIR,
                     "/%s/pkgconfig/ferry.pc" % LIBDIR,
                     "/usr/lib/python3/dist-packages/ferry/__init__.py",
                     "/usr/lib/python3/dist-packages/ferry/_native.py",
                     "/usr/lib/systemd/system/ferryd.service", "/usr/lib/systemd/system/ferryd.socket",
                     "/usr/lib/systemd/user/ferryd.service", "/usr/lib/systemd/user/ferryd.socket",
                     "/usr/lib/sysusers.d/ferry.conf", "/etc/ferry/ferryd.conf",
                     "/usr/share/man/man1/ferry.1", "/usr/share/man/man8/ferryd.8",
                     "/usr/share/doc/ferry/README.md", "/usr/share/doc/ferry/copyright"):
            self.assertIn(path, paths, "%s is not in the package" % path)
        self.assertIn("-> libferry.so.0.1.0", paths["/%s/libferry.so.0" % LIBDIR])
        self.assertIn("-> libferry.so.0", paths["/%s/libferry.so" % LIBDIR])
        # Dependencies: the libraries dpkg-shlibdeps found, and python3 for the binding.
        depends = self.field("Depends")
        for dep in ("python3", "libuv1", "libcurl4", "libcjson1", "libsqlite3-0", "libc6"):
            self.assertRegex(depends, r"(^|, )%s( \(|,|$)" % re.escape(dep), depends)
        self.assertEqual(self.field("Package"), "ferry")
        self.assertEqual(self.field("Section"), "utils")
        self.assertTrue(self.field("Maintainer"))
        ctl = os.path.join(self.tmp, "DEBIAN")
        run(["dpkg-deb", "-e", self.deb, ctl])
        with open(os.path.join(ctl, "shlibs")) as f:
            self.assertRegex(f.read(), r"^libferry 0 ferry \(>= 0\.1\.0\)")
        with open(os.path.join(ctl, "triggers")) as f:
            self.assertIn("activate-noawait ldconfig", f.read())
        with open(os.path.join(ctl, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/ferry/ferryd.conf"])
        # The soname the loader looks for.
        root = self.extract()
        dyn = run(["objdump", "-p", os.path.join(root, LIBDIR, "libferry.so.0.1.0")]).stdout
        self.assertRegex(dyn, r"SONAME\s+libferry\.so\.0\n")

    def extract(self):
        root = os.path.join(self.tmp, "root")
        run(["dpkg-deb", "-x", self.deb, root])
        return root

    def start_packaged_ferryd(self, root):
        sock = os.path.join(self.tmp, "run", "ferryd.sock")
        env = clean_env(HOME=self.tmp, FERRY_SOCKET=sock,
                        FERRY_STATE_DIR=os.path.join(self.tmp, "state"))
        log = open(os.path.join(self.tmp, "ferryd.log"), "wb")
        self.addCleanup(log.close)
        p = subprocess.Popen([os.path.join(root, "usr/bin/ferryd"), "--foreground"], env=env,
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.addCleanup(lambda: p.poll() is None and (p.terminate(), p.wait(20)))

        def serving():
            if p.poll() is not None:
                raise AssertionError("packaged ferryd exited %s" % p.returncode)
            if not os.path.exists(sock):
                return False
            try:
                c = RawClient(sock, timeout=5)
            except OSError:
                return False
            try:
                return c.request("hello", protocol=PROTOCOL)["ok"]
            finally:
                c.close()

        wait_for(serving, 15, what="the packaged ferryd")
        return env, p

    def test_scratch_root_binaries_c_program_and_python(self):
        root = self.extract()
        for prog in ("ferryd", "ferry"):
            out = run([os.path.join(root, "usr/bin", prog), "--version"], env=clean_env()).stdout
            self.assertEqual(out, "%s 0.1.0\n" % prog)
        env, ferryd = self.start_packaged_ferryd(root)
        libdir = os.path.join(root, LIBDIR)

        # C: pkg-config for the scratch root (its sysroot), then the loader finds libferry.so.0.
        pc = clean_env(PKG_CONFIG_SYSROOT_DIR=root, PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"))
        flags = run(["pkg-config", "--cflags", "--libs", "ferry"], env=pc).stdout.split()
        self.assertIn("-I%s/usr/include" % root, flags)
        self.assertIn("-L%s" % libdir, flags)
        self.assertIn("-lferry", flags)
        src = os.path.join(self.tmp, "status.c")
        with open(src, "w") as f:
            f.write(C_PROGRAM)
        exe = os.path.join(self.tmp, "status")
        run(["cc", "-Wall", "-Werror", src, "-o", exe] + flags)
        needed = run(["objdump", "-p", exe]).stdout
        self.assertRegex(needed, r"NEEDED\s+libferry\.so\.0\n")
        out = run([exe], env=dict(env, LD_LIBRARY_PATH=libdir)).stdout
        self.assertTrue(out.startswith("local {"), out)

        # Python: Debian's python3, the packaged binding, libferry.so.0 through the loader.
        data = os.path.join(self.tmp, "data.csv")
        with open(data, "w") as f:
            f.write("a,b\n1,2\n")
        py = dict(env, PYTHONPATH=os.path.join(root, "usr/lib/python3/dist-packages"),
                  LD_LIBRARY_PATH=libdir)
        script = os.path.join(self.tmp, "log.py")
        with open(script, "w") as f:
            f.write(PY_PROGRAM)
        out = run([PYTHON, script, data], env=py).stdout
        info = json.loads(out)
        self.assertEqual(info["module"],
                         os.path.join(root, "usr/lib/python3/dist-packages/ferry/__init__.py"))
        self.assertEqual(info["lib"], "libferry.so.0")  # by soname: the loader found it
        # ... and it was delivered by the packaged ferryd.
        ferry = os.path.join(root, "usr/bin/ferry")
        run([ferry, "wait", "--timeout", "30"], env=env)
        got = json.loads(run([ferry, "get", "from-package", "--json"], env=env).stdout)
        self.assertEqual(got["version"], "1.0.0")
        self.assertEqual([a["logical_path"] for a in got["assets"]], ["data.csv"])
        self.assertEqual(mapped_libferry(ferryd.pid), [])  # ferryd does not need libferry

    def test_without_the_loader_the_binding_says_what_to_do(self):
        root = self.extract()
        py = clean_env(PYTHONPATH=os.path.join(root, "usr/lib/python3/dist-packages"),
                       HOME=self.tmp)
        p = subprocess.run([PYTHON, "-c", "import ferry._native as n; n.library()"], env=py,
                           capture_output=True, text=True, timeout=60)
        if p.returncode == 0:
            self.skipTest("a libferry.so.0 is installed on this machine")
        self.assertIn("cannot load libferry.so.0", p.stderr)
        self.assertIn("run `ldconfig` as root", p.stderr)
        self.assertIn("FERRY_LIB", p.stderr)

    @unittest.skipUnless(os.geteuid() == 0, "installing the package needs root (overlay mounts)")
    @unittest.skipUnless(shutil.which("unshare") and shutil.which("apt"), "needs unshare and apt")
    def test_readme_install_blocks_in_an_overlay(self):
        """README's Install section, every block as written, inside overlay mounts."""
        upper = os.path.join(self.tmp, "overlay")
        probe = subprocess.run(["unshare", "-m", "sh", "-c",
                                "mount --make-rprivate / && mkdir -p %s/p/u %s/p/w && mount -t "
                                "overlay overlay -o lowerdir=/etc,upperdir=%s/p/u,workdir=%s/p/w "
                                "/etc" % ((self.tmp,) * 4)], capture_output=True, text=True)
        if probe.returncode != 0:
            self.skipTest("overlay mounts are not allowed here: %s" % probe.stderr.strip())
        # `cmake --install build` installs the suite's own build when the tree has no build/.
        link = os.path.join(SOURCE_DIR, "build")
        if not os.path.exists(link):
            os.symlink(BUILD_DIR, link)
            self.addCleanup(os.unlink, link)
        blocks = install_blocks()
        script = [SETUP_OVERLAY]
        for i, b in enumerate(blocks):
            script.append('echo "== block %d (%s)"\n' % (i, b))
            script.append(b.text)
        script.append(CHECKS)
        path = os.path.join(self.tmp, "inside.sh")
        with open(path, "w") as f:
            f.write("".join(script))
        env = clean_env(UPPER=upper, SOURCE_DIR=SOURCE_DIR, DEBIAN_FRONTEND="noninteractive",
                        HOME="/tmp/home", XDG_RUNTIME_DIR="/tmp/xdg")
        p = subprocess.run(["unshare", "-m", "bash", "-e", "-u", path], env=env,
                           capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        self.assertEqual(p.stdout.count("== block "), len(blocks))
        self.assertIn("== checked", p.stdout)
        after = p.stdout.split("== checks", 1)[1]
        # The package: its user, its binding found by Debian's python3 with no help (ldconfig
        # ran through the trigger), pkg-config, man pages.
        self.assertRegex(after, re.compile(r"^ferry:x:\d+:\d+:", re.M))
        self.assertIn("package-binding libferry.so.0 /usr/lib/python3/dist-packages/ferry/", after)
        self.assertIn("-lferry", after)
        self.assertRegex(after, r"/usr/(local/)?(share/)?man/man8/ferryd.8")
        # cmake --install: /usr/local, and ldconfig ran (the loader's cache has it).
        self.assertRegex(after, r"libferry\.so\.0 \(.*\) => /usr/local/lib/libferry\.so\.0")
        self.assertIn("local-binding libferry.so.0 /usr/local/lib/python3", after)
        # The venv.
        self.assertIn("venv-binding /tmp/ferry-venv/lib/python3", after)
        # systemctl enabled the units (offline: see the shim).
        self.assertIn("enabled /etc/systemd/system/sockets.target.wants/ferryd.socket", after)
        self.assertIn("enabled /etc/systemd/user/sockets.target.wants/ferryd.socket", after)
        # systemd-analyze verify said nothing about the installed units.
        self.assertNotIn("VERIFY:", out)
        # The installed files went to the overlays, not to the machine.
        self.assertTrue(os.path.exists(os.path.join(upper, "usr/u/bin/ferryd")))
        self.assertEqual(os.path.exists("/usr/lib/sysusers.d/ferry.conf"), self.sysusers_before)


# Inside `unshare -m`: /usr, /etc and /var become overlays whose changes land in $UPPER
# and vanish with the namespace; /tmp is a fresh tmpfs (the venv block writes there).
SETUP_OVERLAY = r"""
mount --make-rprivate /
for d in usr etc var; do
    mkdir -p "$UPPER/$d/u" "$UPPER/$d/w"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$UPPER/$d/u,workdir=$UPPER/$d/w" "/$d"
done
mount -t tmpfs tmpfs /tmp
mkdir -p /tmp/shim /tmp/home "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
# No systemd manager may be touched from a test (none runs here, and a real one is the
# machine's): README's systemctl lines enable units offline. --now needs a running manager
# and is dropped; --user becomes --global (the same symlinks, for every user).
cat >/tmp/shim/systemctl <<'SHIM'
#!/bin/sh
args=""
for a in "$@"; do
    case "$a" in
        --now) ;;
        --user) args="$args --global" ;;
        *) args="$args $a" ;;
    esac
done
echo "systemctl (offline):$args"
exec /usr/bin/systemctl $args
SHIM
chmod 755 /tmp/shim/systemctl
export PATH=/tmp/shim:$PATH
cd "$SOURCE_DIR"
"""

CHECKS = r"""
echo "== checks"
getent passwd ferry
pkg-config --cflags --libs ferry
man -w ferryd ferry
/usr/bin/python3 -I -c 'import sys; sys.path = [p for p in sys.path if "/usr/local/" not in p]; import ferry, ferry._native as n; n.library(); print("package-binding", n.library_path(), ferry.__file__)'
/usr/bin/python3 -c 'import ferry, ferry._native as n; n.library(); print("local-binding", n.library_path(), ferry.__file__)'
/tmp/ferry-venv/bin/python -c 'import ferry; print("venv-binding", ferry.__file__)'
ldconfig -p | grep libferry
for l in /etc/systemd/system/sockets.target.wants/ferryd.socket /etc/systemd/user/sockets.target.wants/ferryd.socket; do
    test -L "$l" && echo "enabled $l"
done
systemd-analyze verify /usr/lib/systemd/system/ferryd.socket /usr/lib/systemd/system/ferryd.service 2>&1 | sed 's/^/VERIFY: /'
systemd-analyze verify --user /usr/lib/systemd/user/ferryd.socket /usr/lib/systemd/user/ferryd.service 2>&1 | sed 's/^/VERIFY: /'
echo "== checked"
"""


@unittest.skipUnless(shutil.which("systemd-analyze"),
                     "systemd-analyze is not installed (Debian package: systemd)")
class Units(unittest.TestCase):
    """The units as configured by the build, pointed at the built ferryd, verify cleanly."""

    def test_systemd_analyze_verify(self):
        tmp = tempfile.mkdtemp(prefix="ferry-test-units-")
        self.addCleanup(shutil.rmtree, tmp, True)
        man = os.path.join(tmp, "man")
        for page, section in (("client/ferry.1", "man1"), ("daemon/ferryd.8", "man8")):
            os.makedirs(os.path.join(man, section), exist_ok=True)
            shutil.copy(os.path.join(SOURCE_DIR, page), os.path.join(man, section))
        built = os.path.join(BUILD_DIR, "systemd")
        for scope in ("system", "user"):
            os.makedirs(os.path.join(tmp, scope))
            for unit in ("ferryd.service", "ferryd.socket"):
                with open(os.path.join(built, scope, unit)) as f:
                    text = f.read()
                text, n = re.subn(r"^ExecStart=\S+/ferryd ", "ExecStart=%s " % FERRYD, text,
                                  flags=re.M)
                self.assertEqual(n, 1 if unit.endswith(".service") else 0)
                with open(os.path.join(tmp, scope, unit), "w") as f:
                    f.write(text)
        xdg = os.path.join(tmp, "xdg")
        os.mkdir(xdg, 0o700)
        env = clean_env(MANPATH=man, XDG_RUNTIME_DIR=xdg, HOME=tmp)
        for scope, flags in (("system", []), ("user", ["--user"])):
            p = subprocess.run(["systemd-analyze", "verify"] + flags +
                               [os.path.join(tmp, scope, u) for u in ("ferryd.socket", "ferryd.service")],
                               env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""), scope)

    def test_man_pages_render_without_warnings(self):
        if not shutil.which("groff"):
            self.skipTest("groff is not installed (Debian package: groff-base)")
        for page in ("client/ferry.1", "daemon/ferryd.8"):
            p = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8",
                                os.path.join(SOURCE_DIR, page)], capture_output=True, text=True)
            self.assertEqual((p.returncode, p.stderr), (0, ""), page)

    def test_man_pages_name_every_command_and_setting(self):
        with open(os.path.join(SOURCE_DIR, "client/ferry.1")) as f:
            ferry1 = f.read()
        helptext = run([os.path.join(BUILD_DIR, "client", "ferry"), "--help"]).stdout
        commands = re.findall(r"^  (\w+)\s", helptext.split("commands:")[1], flags=re.M)
        self.assertIn("cancel", commands)
        for cmd in commands:
            if cmd != "help":
                self.assertRegex(ferry1, r"ferry %s\b" % cmd, "ferry(1) misses `ferry %s`" % cmd)


if __name__ == "__main__":
    unittest.main()
