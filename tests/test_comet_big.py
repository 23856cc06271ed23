"""A 2 GiB asset uploads with ferryd's resident memory under 32 MiB (issue 3, acceptance 5)."""

import os
import threading
import time
import unittest

from comettest import CometTestCase, daemon_is_sanitized, daemon_rss_kib, sha256_file

SIZE = 2 << 30
RSS_LIMIT_KIB = 32 * 1024


def make_file(path, size):
    """A 2 GiB file of non-repeating bytes, written in 8 MiB blocks (no holes)."""
    block = bytearray(os.urandom(8 << 20))
    with open(path, "wb") as f:
        written = 0
        n = 0
        while written < size:
            block[0:8] = n.to_bytes(8, "little")  # every block differs
            chunk = block[: min(len(block), size - written)]
            f.write(chunk)
            written += len(chunk)
            n += 1


class CometBig(CometTestCase):
    def test_2gib_upload_with_bounded_memory(self):
        d = self.daemon
        if daemon_is_sanitized(d):
            self.skipTest("ASan's shadow memory makes RSS meaningless; the release build measures it")
        free = os.statvfs(self.tmp)
        if free.f_bavail * free.f_frsize < 3 * SIZE + (1 << 30):
            self.skipTest("needs about 7 GiB of free disk (file, spool, stand-in copy)")
        path = os.path.join(self.tmp, "big.bin")
        make_file(path, SIZE)
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], daemon_rss_kib(d))
                except OSError:
                    pass
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        t0 = time.monotonic()
        try:
            d.cli("log", "huge", path, "--type", "model")
            t_logged = time.monotonic()
            self.wait_drained(timeout=600)
        finally:
            stop.set()
            sampler.join(10)
        took = time.monotonic() - t0
        v = self.versions("huge")[0]
        self.assertEqual(v["state"], "CLOSED")
        stored = self.files_of(v)["big.bin"]
        self.assertEqual(stored["size"], SIZE)
        self.assertEqual(stored["sha256"], sha256_file(path))
        print("\n2 GiB: logged in %.1fs, delivered in %.1fs; ferryd peak RSS %.1f MiB"
              % (t_logged - t0, took, peak[0] / 1024.0))
        self.assertGreater(peak[0], 0)
        self.assertLess(peak[0], RSS_LIMIT_KIB, "ferryd peaked at %d KiB" % peak[0])


if __name__ == "__main__":
    unittest.main()
