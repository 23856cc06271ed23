"""s3_standin — a small versioned S3 bucket that checks every request's SigV4 signature.

s3rver checks only the access key of a SigV4 request, never its signature,
and implements neither GetBucketVersioning nor ListObjectVersions. This
stand-in fills both gaps for the tests: it recomputes each request's
signature by AWS's published algorithm (canonical request, string to sign,
HMAC-SHA256 key chain) from the secret it was given, with Python's standard
library only, and answers SignatureDoesNotMatch (403) when they differ; it
requires the session token and x-amz-content-sha256 to be among the signed
headers. It serves one versioned bucket: GetBucketVersioning (Enabled),
ListObjectVersions with key/version-id markers and max-keys, and GetObject
with versionId. Runs on 127.0.0.1 on a free port, in a thread of the test.
"""

import hashlib
import hmac
import http.server
import threading
import urllib.parse
from xml.sax.saxutils import escape


def _quote(s):
    return urllib.parse.quote(s, safe="-_.~")


def canonical_query(raw):
    pairs = []
    for part in raw.split("&") if raw else []:
        name, _, value = part.partition("=")
        pairs.append((_quote(urllib.parse.unquote(name)), _quote(urllib.parse.unquote(value))))
    return "&".join("%s=%s" % p for p in sorted(pairs))


def expected_signature(method, path, query, headers, secret):
    """(signature, problem) for a request by AWS's SigV4 algorithm."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return None, "not a SigV4 request"
    fields = dict(f.strip().split("=", 1) for f in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    _, date, region, service, term = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    canon_headers = "".join("%s:%s\n" % (h, " ".join(headers.get(h, "").split()))
                            for h in signed)
    creq = "\n".join([method, path, canonical_query(query), canon_headers,
                      fields["SignedHeaders"], headers.get("x-amz-content-sha256", "")])
    scope = "/".join([date, region, service, term])
    sts = "\n".join(["AWS4-HMAC-SHA256", headers.get("x-amz-date", ""), scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, term):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return (hmac.new(key, sts.encode(), hashlib.sha256).hexdigest(), fields["Signature"],
            signed, fields["Credential"].split("/")[0], region)


class VersionedBucket:
    """{key: [(version_id, bytes), ... newest last]}; a None body is a delete marker."""

    def __init__(self, name, access_key, secret, token, region):
        self.name, self.access_key, self.secret, self.token = name, access_key, secret, token
        self.region = region
        self.objects = {}
        self.requests = []  # (method, path?query) of every signed request seen
        self.server = None

    def put(self, key, body):
        versions = self.objects.setdefault(key, [])
        vid = "v%d.%s" % (len(versions) + 1, hashlib.md5(key.encode()).hexdigest()[:6])
        versions.append((vid, body))
        return vid

    def start(self):
        bucket = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body, ctype="application/xml", extra=()):
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def error(self, status, code, msg):
                self.reply(status, "<Error><Code>%s</Code><Message>%s</Message></Error>"
                           % (code, escape(msg)))

            def do_GET(self):
                path, _, query = self.path.partition("?")
                bucket.requests.append(("GET", self.path))
                sig = expected_signature("GET", path, query, self.headers, bucket.secret)
                if sig[0] is None:
                    return self.error(403, "AccessDenied", sig[1])
                want, got, signed, ak, region = sig
                if ak != bucket.access_key:
                    return self.error(403, "InvalidAccessKeyId", "unknown key")
                for h in ("host", "x-amz-content-sha256", "x-amz-date", "x-amz-security-token"):
                    if h not in signed:
                        return self.error(400, "AccessDenied", "%s is not signed" % h)
                if self.headers.get("x-amz-security-token") != bucket.token:
                    return self.error(403, "InvalidToken", "bad session token")
                if region != bucket.region:
                    return self.error(400, "AuthorizationHeaderMalformed", "wrong region")
                if not hmac.compare_digest(want, got):
                    return self.error(403, "SignatureDoesNotMatch", "signature differs")
                parts = path.split("/", 2)
                q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
                if parts[1] != bucket.name:
                    return self.error(404, "NoSuchBucket", "no such bucket")
                if len(parts) < 3 or parts[2] == "":
                    if "versioning" in q:
                        return self.reply(200, "<VersioningConfiguration><Status>Enabled"
                                               "</Status></VersioningConfiguration>")
                    if "versions" in q:
                        return self.list_versions(q)
                    return self.error(400, "InvalidRequest", "ListObjectsV2 on a versioned "
                                                             "bucket: ferry should use versions")
                key = urllib.parse.unquote(parts[2])
                for vid, body in bucket.objects.get(key, []):
                    if vid == q.get("versionId") and body is not None:
                        return self.reply(200, body, "application/octet-stream",
                                          [("ETag", '"%s"' % hashlib.md5(body).hexdigest())])
                return self.error(404, "NoSuchVersion", "no such version")

            def list_versions(self, q):
                prefix, maxkeys = q.get("prefix", ""), int(q.get("max-keys", "1000"))
                marker = (q.get("key-marker", ""), q.get("version-id-marker", ""))
                entries = []
                for key in sorted(bucket.objects):
                    if not key.startswith(prefix):
                        continue
                    versions = bucket.objects[key]
                    for i, (vid, body) in reversed(list(enumerate(versions))):
                        entries.append((key, vid, body, i == len(versions) - 1))
                if marker[0]:
                    keys = [(e[0], e[1]) for e in entries]
                    start = keys.index(marker) + 1 if marker in keys else 0
                    entries = entries[start:]
                page, more = entries[:maxkeys], len(entries) > maxkeys
                xml = ["<ListVersionsResult><Name>%s</Name><Prefix>%s</Prefix>"
                       "<IsTruncated>%s</IsTruncated>" % (bucket.name, escape(prefix),
                                                          "true" if more else "false")]
                if more:
                    xml.append("<NextKeyMarker>%s</NextKeyMarker><NextVersionIdMarker>%s"
                               "</NextVersionIdMarker>" % (escape(page[-1][0]), page[-1][1]))
                for key, vid, body, latest in page:
                    if body is None:
                        xml.append("<DeleteMarker><Key>%s</Key><VersionId>%s</VersionId>"
                                   "<IsLatest>%s</IsLatest></DeleteMarker>"
                                   % (escape(key), vid, "true" if latest else "false"))
                    else:
                        xml.append("<Version><Key>%s</Key><VersionId>%s</VersionId><IsLatest>"
                                   "%s</IsLatest><ETag>&quot;%s&quot;</ETag><Size>%d</Size>"
                                   "</Version>" % (escape(key), vid, "true" if latest else
                                                   "false", hashlib.md5(body).hexdigest(),
                                                   len(body)))
                xml.append("</ListVersionsResult>")
                self.reply(200, "".join(xml))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
