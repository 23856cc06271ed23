#!/usr/bin/python3
"""HTTP/1.1 stand-in server for tests/test_http.c (standard library only).

Listens on 127.0.0.1 on a free port, prints "PORT n" on stdout, and exits when
its stdin closes. Bodies are read and hashed as they stream; nothing holds a
whole upload in memory.

Endpoints (any method; every request body is read first):
  /json                       200 with a small JSON document
  /echo                       JSON: method, path, headers, body_size, body_sha256,
                              multipart parts (name, filename, size, sha256, value),
                              conn_id (the TCP connection's sequence number)
  /status/CODE?retry_after=V&size=N
                              reply CODE, with "Retry-After: V" if given, and a
                              JSON body (padded to N bytes if given)
  /slow?ms=N&group=G          sleep N ms; JSON: active (group's requests in progress
                              at start, this one included), max_active, seq (start order)
  /reset                      reset the TCP connection (RST) without replying
  /download?size=N            N bytes: byte i is (i % 251) ^ ((i >> 16) & 0xff)
  /redirect?to=PATH           302 to PATH
  /stats                      JSON: connections accepted so far
"""

import hashlib
import http.server
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse

CHUNK = 65536


class State:
    lock = threading.Lock()
    connections = 0
    active = {}
    max_active = {}
    seq = {}


# Download content: a period-251 ramp XORed with the 64 KiB block number.
RAMP = bytes(i % 251 for i in range(251)) * (CHUNK // 251 + 2)
XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def download_block(offset, n):
    start = offset % 251
    return RAMP[start:start + n].translate(XOR_TABLES[(offset >> 16) & 0xFF])


class Multipart:
    """Streaming multipart/form-data parser: feed() chunks, read .parts."""

    def __init__(self, boundary):
        self.delim = b"\r\n--" + boundary
        self.buf = bytearray(b"\r\n")  # so the first delimiter has its CRLF too
        self.state = "preamble"
        self.parts = []
        self.part = None
        self.hash = None

    def _data(self, data):
        if self.state == "body" and data:
            self.part["size"] += len(data)
            self.hash.update(data)
            if self.part["filename"] is None and len(self.part["_value"]) < 65536:
                self.part["_value"] += data

    def _end_part(self):
        part = self.part
        part["sha256"] = self.hash.hexdigest()
        if part["filename"] is None:
            part["value"] = part["_value"].decode("utf-8", "replace")
        del part["_value"]
        self.parts.append(part)
        self.part = None

    def feed(self, data):
        self.buf += data
        while True:
            if self.state in ("preamble", "body"):
                idx = self.buf.find(self.delim)
                if idx < 0:
                    keep = len(self.delim) - 1
                    if len(self.buf) > keep:
                        self._data(bytes(self.buf[:-keep]))
                        del self.buf[:-keep]
                    return
                self._data(bytes(self.buf[:idx]))
                if self.state == "body":
                    self._end_part()
                del self.buf[:idx + len(self.delim)]
                self.state = "delim"
            elif self.state == "delim":
                if len(self.buf) < 2:
                    return
                if self.buf[:2] == b"--":
                    self.state = "end"
                elif self.buf[:2] == b"\r\n":
                    del self.buf[:2]
                    self.state = "headers"
                else:
                    raise ValueError("bad multipart delimiter")
            elif self.state == "headers":
                idx = self.buf.find(b"\r\n\r\n")
                if idx < 0:
                    if len(self.buf) > 16384:
                        raise ValueError("multipart headers too long")
                    return
                headers = {}
                for line in bytes(self.buf[:idx]).decode("utf-8", "replace").split("\r\n"):
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                disp = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"',
                                       headers.get("content-disposition", "")))
                self.part = {"name": disp.get("name"), "filename": disp.get("filename"),
                             "content_type": headers.get("content-type"), "size": 0,
                             "_value": b""}
                self.hash = hashlib.sha256()
                del self.buf[:idx + 4]
                self.state = "body"
            else:  # end: ignore the epilogue
                self.buf.clear()
                return


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with State.lock:
            State.connections += 1
            self.conn_id = State.connections

    def log_message(self, fmt, *args):
        pass

    def body_chunks(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                while size > 0:
                    data = self.rfile.read(min(size, CHUNK))
                    if not data:
                        raise ConnectionError("body cut short")
                    size -= len(data)
                    yield data
                self.rfile.readline(1024)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(left, CHUNK))
                if not data:
                    raise ConnectionError("body cut short")
                left -= len(data)
                yield data

    def read_body(self):
        """Consume the request body; return (size, sha256 hex, text or None, parts)."""
        ctype = self.headers.get("Content-Type", "")
        match = re.search(r'boundary="?([^";]+)"?', ctype)
        parser = Multipart(match.group(1).encode()) if ctype.startswith("multipart/") and match \
            else None
        digest = hashlib.sha256()
        size = 0
        head = bytearray()
        for data in self.body_chunks():
            size += len(data)
            digest.update(data)
            if len(head) < 65536:
                head += data[:65536 - len(head)]
            if parser:
                parser.feed(data)
        text = bytes(head).decode("utf-8", "replace") if size <= 65536 else None
        return size, digest.hexdigest(), text, parser.parts if parser else None

    def reply(self, code, body=b"", ctype="application/json", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, code, obj, headers=()):
        self.reply(code, json.dumps(obj).encode(), headers=headers)

    def dispatch(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        size, sha, text, parts = self.read_body()
        path = url.path
        if path == "/json":
            self.reply_json(200, {"ok": True, "items": [1, 2, 3]})
        elif path == "/echo":
            self.reply_json(200, {
                "method": self.command, "path": url.path, "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_size": size, "body_sha256": sha, "body": text, "parts": parts,
                "conn_id": self.conn_id})
        elif path.startswith("/status/"):
            code = int(path[len("/status/"):])
            headers = [("Retry-After", query["retry_after"])] if "retry_after" in query else []
            body = json.dumps({"code": code, "msg": "status %d" % code}).encode()
            if "size" in query:
                body = body.ljust(int(query["size"]), b" ")
            self.reply(code, body, headers=headers)
        elif path == "/slow":
            group = query.get("group", "")
            with State.lock:
                State.active[group] = State.active.get(group, 0) + 1
                State.seq[group] = State.seq.get(group, 0) + 1
                active, seq = State.active[group], State.seq[group]
                State.max_active[group] = max(State.max_active.get(group, 0), active)
            try:
                time.sleep(int(query.get("ms", "1000")) / 1000.0)
            finally:
                with State.lock:
                    State.active[group] -= 1
                    max_active = State.max_active[group]
            self.reply_json(200, {"active": active, "max_active": max_active, "seq": seq,
                                  "conn_id": self.conn_id})
        elif path == "/reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.rfile.close()
            self.wfile.close()
            self.connection.close()  # linger 0: the peer sees RST
        elif path == "/download":
            total = int(query.get("size", "0"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            offset = 0
            while offset < total and self.command != "HEAD":
                n = min(CHUNK, total - offset)
                self.wfile.write(download_block(offset, n))
                offset += n
        elif path == "/endless":
            # An error status whose body never ends (until the client goes away).
            self.send_response(int(query.get("status", "503")))
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
            except OSError:
                pass
        elif path == "/html":
            self.reply(200, b"<html><body>Sign in to continue</body></html>",
                       headers=[("Content-Type", "text/html; charset=utf-8")])
        elif path == "/redirect":
            self.reply(302, b"", headers=[("Location", query.get("to", "/json"))])
        elif path == "/stats":
            with State.lock:
                self.reply_json(200, {"connections": State.connections})
        else:
            self.reply_json(404, {"msg": "no such endpoint"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = dispatch


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, ValueError, OSError)):
            return  # peers that go away (cancel, reset tests) are expected
        super().handle_error(request, client_address)


def watch_stdin():
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


def main():
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=watch_stdin, daemon=True).start()
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
