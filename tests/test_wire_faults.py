"""Malformed frames never hurt the daemon or its other clients (acceptance 6)."""

import json
import os
import random
import socket
import struct
import unittest

from ferrytest import PROTOCOL, FerryTestCase, RawClient


class WireFaults(FerryTestCase):
    def setUp(self):
        super().setUp()
        self.bystander = self.daemon.raw()
        self.bystander.hello()

    def tearDown(self):
        self.bystander.close()
        super().tearDown()

    def assertStillServing(self):
        rep = self.bystander.request("status")
        self.assertTrue(rep["ok"], rep)
        self.assertTrue(self.daemon.alive())

    def fresh(self):
        c = self.daemon.raw()
        self.addCleanup(c.close)
        return c

    def test_oversized_frame_is_refused_and_dropped(self):
        c = self.fresh()
        c.hello()
        c.send_raw(struct.pack(">I", 1024 * 1024 + 1) + b"{")
        rep = c.read_frame()
        self.assertEqual(rep["error"]["code"], "frame_too_large")
        self.assertIsNone(c.read_frame())  # then the connection is closed
        self.assertStillServing()

    def test_exactly_one_mebibyte_is_accepted(self):
        c = self.fresh()
        c.hello()
        pad = 1024 * 1024 - len(json.dumps({"id": 7, "op": "status", "x": ""}))
        msg = json.dumps({"id": 7, "op": "status", "x": "a" * pad})
        self.assertEqual(len(msg), 1024 * 1024)
        c.send_frame(msg)
        rep = c.read_frame()
        self.assertEqual(rep["error"]["code"], "invalid_argument")  # unknown field, not framing
        self.assertStillServing()

    def test_empty_frame(self):
        c = self.fresh()
        c.send_raw(struct.pack(">I", 0))
        self.assertEqual(c.read_frame()["error"]["code"], "protocol_error")
        self.assertIsNone(c.read_frame())
        self.assertStillServing()

    def test_invalid_json_gets_an_error_and_the_connection_lives_on(self):
        c = self.fresh()
        c.hello()
        for bad in (b"{not json", b"[1, 2]", b'"str"', b'{"op": "status"}', b'{"id": -1, "op": "status"}',
                    b'{"id": 1.5, "op": "status"}', b'{"id": 3, "op": 4}', b"\xff\xfe\x00"):
            c.send_frame(bad)
            rep = c.read_frame()
            self.assertIsNotNone(rep, bad)
            self.assertFalse(rep["ok"])
            self.assertEqual(rep["error"]["code"], "protocol_error", bad)
        self.assertTrue(c.request("status")["ok"])
        self.assertStillServing()

    def test_disconnect_mid_frame(self):
        for cut in (2, 4, 10):
            c = RawClient(self.daemon.socket)
            c.hello()
            frame = json.dumps({"id": 9, "op": "status"}).encode()
            c.send_raw((struct.pack(">I", len(frame)) + frame)[:cut])
            c.close()
        self.assertStillServing()

    def test_hello_rules(self):
        c = self.fresh()
        rep = c.request("status")
        self.assertEqual(rep["error"]["code"], "protocol_error")
        self.assertIn("hello", rep["error"]["message"])
        rep = c.request("hello", protocol=99)
        self.assertEqual(rep["error"]["code"], "protocol_mismatch")
        self.assertIn("99", rep["error"]["message"])
        self.assertIn(str(PROTOCOL), rep["error"]["message"])
        self.assertIsNone(c.read_frame())
        self.assertStillServing()

    def test_random_garbage_never_crashes_the_daemon(self):
        rng = random.Random(1234)
        for i in range(200):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(self.daemon.socket)
            if i % 2:
                hello = json.dumps({"id": 1, "op": "hello", "protocol": 2}).encode()
                s.sendall(struct.pack(">I", len(hello)) + hello)
            kind = i % 3
            if kind == 0:
                payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
            elif kind == 1:
                body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
                payload = struct.pack(">I", len(body)) + body
            else:
                fields = {"id": rng.randint(0, 9), "op": rng.choice(
                    ["artifact.log", "get", "download.open", "wait", "retry", "ls", "status"]),
                    rng.choice(["name", "assets", "dir", "jobs", "job"]): rng.choice(
                        [None, 1, -1, "x", [], {}, [{}], [{"logical_path": 1}], "a" * 200])}
                body = json.dumps(fields).encode()
                payload = struct.pack(">I", len(body)) + body
            try:
                s.sendall(payload)
            except OSError:
                pass
            s.close()
        self.assertStillServing()

    def test_many_connections_at_once(self):
        conns = []
        for _ in range(200):
            c = RawClient(self.daemon.socket)
            conns.append(c)
        for c in conns:
            c.hello()
        for c in conns:
            self.assertTrue(c.request("status")["ok"])
            c.close()
        self.assertStillServing()


class SocketSafety(FerryTestCase):
    def test_socket_and_directory_modes(self):
        st = os.stat(self.daemon.socket)
        self.assertEqual(st.st_mode & 0o777, 0o600)
        st = os.stat(os.path.dirname(self.daemon.socket))
        self.assertEqual(st.st_mode & 0o777, 0o700)

    def test_second_daemon_on_the_same_socket_is_refused(self):
        import subprocess
        from ferrytest import FERRYD
        p = subprocess.run([FERRYD, "--foreground"], env=self.daemon.env, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("already listening", p.stderr)
        self.assertTrue(self.daemon.alive())
        self.assertTrue(os.path.exists(self.daemon.socket))
        c = self.daemon.raw()
        self.assertTrue(c.hello()["ok"])
        c.close()

    def test_stale_socket_is_replaced_after_a_crash(self):
        self.daemon.kill9()
        self.assertTrue(os.path.exists(self.daemon.socket))
        self.daemon.start()
        self.assertTrue(self.daemon.raw().hello()["ok"])


if __name__ == "__main__":
    unittest.main()
