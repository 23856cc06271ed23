#!/usr/bin/env python3
"""Write the seed corpora of ferry's fuzz targets (tests/fuzz/seeds/).

One request of each op in proto/PROTOCOL.md (and the replies a client reads)
for fuzz_request; the same requests framed, fed in various ways, with good
and bad headers, for fuzz_frame. Run it again after PROTOCOL.md changes:
    python3 tests/fuzz/make_seeds.py
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

KEY = "a" * 16 + "0123456789abcdef"  # 32 letters and digits

REQUESTS = {
    "hello": {"id": 1, "op": "hello", "protocol": 1, "client": "libferry/0.1.0"},
    "hello_bare": {"id": 0, "op": "hello", "protocol": 2},
    "experiment_create": {"id": 2, "op": "experiment.create", "workspace": "w",
                          "project": "p", "name": "run-1"},
    "experiment_create_key": {"id": 3, "op": "experiment.create", "key": KEY},
    "stage": {"id": 4, "op": "stage"},
    "artifact_log": {
        "id": 5, "op": "artifact.log", "name": "my-data", "type": "dataset",
        "version": "1.2.0-rc.1+build.5", "aliases": ["best"], "tags": ["v"],
        "metadata": {"rows": 1000, "nested": {"a": [1, 2.5, None, True]}},
        "experiment": KEY, "workspace": "w", "project": "p",
        "assets": [
            {"logical_path": "data.csv", "file": "/abs/path/data.csv", "overwrite": False},
            {"logical_path": "dir/sub/x.bin", "staged": "0123456789abcdef0123456789abcdef",
             "metadata": {}},
            {"logical_path": "remote.txt", "remote": "s3://bucket/key", "overwrite": True},
        ]},
    "artifact_log_minimal": {"id": 6, "op": "artifact.log", "name": "m", "assets": []},
    "status": {"id": 7, "op": "status"},
    "ls": {"id": 8, "op": "ls", "state": "all", "limit": 100000},
    "wait": {"id": 9, "op": "wait", "jobs": [1, 2, 3], "timeout_ms": 5000},
    "retry_job": {"id": 10, "op": "retry", "job": 4},
    "retry_all": {"id": 11, "op": "retry", "all": True},
    "pause": {"id": 12, "op": "pause", "paused": True},
    "cache": {"id": 13, "op": "cache", "clear": False},
    "get_spec": {"id": 14, "op": "get", "name": "ws/my-data:1.2.0"},
    "get_parts": {"id": 15, "op": "get", "name": "my-data", "workspace": "ws",
                  "version_or_alias": "best"},
    "download": {"id": 16, "op": "download", "name": "my-data:latest", "dir": "/abs/dir",
                 "overwrite": "preserve"},
    "unknown_op": {"id": 123456789, "op": "no.such.op", "extra": None},
}

# Replies (fuzz_request also runs proto_reply_parse) and envelopes that are refused.
OTHERS = {
    "reply_ok": b'{"id":1,"ok":true,"protocol":1,"daemon":"ferryd/0.1.0","backend":"local","pid":7}',
    "reply_error": b'{"id":5,"ok":false,"error":{"code":"exists","message":"version 1.2.0 exists"}}',
    "reply_status": (b'{"id":7,"ok":true,"backend":"comet","online":true,"paused":false,'
                     b'"offline_since":null,"last_error":null,"queued":1,"running":0,"failed":1,'
                     b'"errors":[{"job":3,"name":"x","code":"io_error","message":"m"}]}'),
    "bad_id": b'{"id":-1,"op":"status"}',
    "bad_id_fraction": b'{"id":1.5,"op":"status"}',
    "bad_op_empty": b'{"id":1,"op":""}',
    "bad_not_object": b'[{"id":1,"op":"status"}]',
    "unicode": '{"id":1,"op":"get","name":"w\u00e9/n\u00e4me:\u00df","x":"\\ud83d\\ude00"}'.encode(),
}

# fuzz_frame's first byte: chunking mode (low 3 bits) and flags.
SYNTH, TOOBIG, LAZY = 0x08, 0x10, 0x20


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def write(dirname, name, data):
    with open(os.path.join(dirname, name), "wb") as f:
        f.write(data)


def main():
    req_dir = os.path.join(HERE, "seeds", "fuzz_request")
    frame_dir = os.path.join(HERE, "seeds", "fuzz_frame")
    for d in (req_dir, frame_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)

    payloads = []
    for name, msg in REQUESTS.items():
        data = json.dumps(msg, separators=(",", ":")).encode()
        payloads.append(data)
        write(req_dir, name + ".json", data)
    for name, data in OTHERS.items():
        write(req_dir, name + ".json", data)

    stream = b"".join(frame(p) for p in payloads)
    for mode in range(8):
        write(frame_dir, "all_ops_mode%d" % mode, bytes([mode, 0x5a]) + stream)
    write(frame_dir, "all_ops_lazy", bytes([LAZY | 3, 7]) + stream)
    write(frame_dir, "hello", bytes([1, 1]) + frame(payloads[0]))
    write(frame_dir, "truncated", bytes([2, 2]) + frame(payloads[5])[:-3])
    write(frame_dir, "header_zero", bytes([3, 3]) + frame(payloads[0]) + b"\0\0\0\0" + b"{}")
    write(frame_dir, "header_too_big",
          bytes([2, 4]) + frame(payloads[0]) + struct.pack(">I", 1024 * 1024 + 1) + b"{")
    write(frame_dir, "header_split", bytes([6, 5]) + frame(b"{}") * 3 + b"\0\0")
    # FLAG_SYNTH records: a 4-byte header and the byte its payload is filled with.
    write(frame_dir, "synth_max_frame",
          bytes([SYNTH | 5, 6]) + struct.pack(">I", 1024 * 1024) + b"x" + struct.pack(">I", 2) + b"y")
    write(frame_dir, "synth_over_max",
          bytes([SYNTH | 7, 7]) + struct.pack(">I", 300000) + b" " +
          struct.pack(">I", 1024 * 1024 + 1) + b"z")
    write(frame_dir, "too_big_message", bytes([TOOBIG, 8]) + frame(b'{"id":1,"op":"status"}'))


if __name__ == "__main__":
    main()
