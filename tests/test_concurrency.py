"""32 clients logging at once (walking skeleton, acceptance 4)."""

import collections
import os
import threading
import time
import unittest

from ferrytest import FerryTestCase

CLIENTS = 32
PER_CLIENT = 50
NAMES = 4  # clients share artifact names, so version numbering is contended


class Concurrency(FerryTestCase):
    def test_32_clients_every_version_once_without_gaps(self):
        d = self.daemon
        src = self.write("payload.txt", "same bytes for everyone\n")
        acked = collections.defaultdict(list)
        errors = []
        lock = threading.Lock()

        def client(n):
            c = d.raw()
            try:
                c.hello()
                for i in range(PER_CLIENT):
                    rep = c.request("artifact.log", name="shared-%d" % ((n + i) % NAMES),
                                    metadata={"client": n, "i": i},
                                    assets=[{"logical_path": "p.txt", "file": src}])
                    with lock:
                        if rep is None or not rep["ok"]:
                            errors.append(rep)
                        else:
                            acked[rep["job"]].append((n, i))
            finally:
                c.close()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        self.assertFalse(any(t.is_alive() for t in threads), "clients did not finish in time")
        self.assertEqual(errors, [])
        self.assertEqual(len(acked), CLIENTS * PER_CLIENT)
        self.assertTrue(all(len(v) == 1 for v in acked.values()), "a job id was given twice")
        d.cli("wait", "--timeout", "240")
        sys_elapsed = time.monotonic() - started

        c = d.raw()
        c.hello()
        items = c.request("ls", state="all", limit=10000)["items"]
        c.close()
        self.assertEqual(len(items), CLIENTS * PER_CLIENT)
        per_name = collections.defaultdict(list)
        for it in items:
            self.assertEqual(it["state"], "done")
            per_name[it["name"]].append(int(it["version"].split(".")[0]))
        self.assertEqual(len(per_name), NAMES)
        for name, majors in per_name.items():
            self.assertEqual(sorted(majors), list(range(1, len(majors) + 1)),
                             "%s has gaps or duplicates" % name)
        # Each version's metadata names exactly one (client, i): nothing was mixed up.
        seen = set()
        for name, majors in per_name.items():
            for m in (1, len(majors)):
                got = d.cli_json("get", "%s:%d.0.0" % (name, m))
                key = (got["metadata"]["client"], got["metadata"]["i"])
                self.assertNotIn(key, seen)
                seen.add(key)
        print("\n%d versions from %d clients in %.1fs" % (len(items), CLIENTS, sys_elapsed))


if __name__ == "__main__":
    unittest.main()
