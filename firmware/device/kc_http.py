# Minimal HTTP/1.0 GET for update downloads. Plain TCP on purpose: a release is trusted because
# its manifest is signed (kc_update), not because of the transport, and mbedTLS would need
# ~40 KB of heap next to the MQTT link. The body streams in chunks, so a file never sits whole
# in RAM, and the watchdog is fed between reads (a blocking recv has a timeout, never forever).
import socket

HEAD_MAX = 2048


class HTTPError(OSError):
    pass


def split(url):
    """'http://host:port/path' -> (host, port, path); ValueError for anything else."""
    if not url.startswith("http://"):
        raise ValueError("only http:// URLs")
    rest = url[7:]
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    host, port = hostport, 80
    j = hostport.rfind(":")
    if j >= 0:
        host, port = hostport[:j], int(hostport[j + 1:])
    if not host or not 0 < port < 65536:
        raise ValueError("bad host or port in URL")
    return host, port, path


def get(url, idle=None, timeout_s=10, chunk=1024, limit=None):
    """Yield the body of a 200 answer in chunks (bytes). HTTPError for another status, a body
    shorter than Content-Length, or more than `limit` bytes."""
    host, port, path = split(url)
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    s = socket.socket()
    try:
        s.settimeout(timeout_s)  # plain TCP sockets have settimeout on every port (TLS ones do not)
        s.connect(addr)
        s.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            data = s.recv(256)
            if not data:
                raise HTTPError("connection closed in the HTTP header")
            head += data
            if len(head) > HEAD_MAX:
                raise HTTPError("HTTP header too long")
        head, body = head.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ")
        if len(status) < 2 or status[1] != b"200":
            raise HTTPError("HTTP %s for %s" % (status[1].decode() if len(status) > 1 else "?", path))
        length = None
        for line in lines[1:]:
            i = line.find(b":")
            if i > 0 and line[:i].strip().lower() == b"content-length":
                length = int(line[i + 1:].strip())
        if limit is not None and length is not None and length > limit:
            raise HTTPError("%s is %d bytes, more than %d" % (path, length, limit))
        n = 0
        while True:
            if body:
                n += len(body)
                if limit is not None and n > limit:
                    raise HTTPError("%s is more than %d bytes" % (path, limit))
                yield body
            if idle is not None:
                idle()
            if length is not None and n >= length:
                break
            body = s.recv(chunk)
            if not body:
                break
        if length is not None and n != length:
            raise HTTPError("%s: %d of %d bytes" % (path, n, length))
    finally:
        s.close()
