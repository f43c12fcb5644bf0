# ECDSA signature verification on NIST P-256 with SHA-256, for signed firmware updates.
# Written from the definitions: curve parameters of FIPS 186-4 appendix D.1.2.3 (also SEC 2
# v2 section 2.4.2, secp256r1), verification of SEC 1 v2 section 4.1.4. Jacobian coordinates
# (curve a = -3), Shamir's trick for u1*G + u2*Q. Only public values are handled, so no
# constant-time care is needed. Runs on MicroPython (big ints, 3-argument pow) and CPython.
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5, 1)


def _int(b):
    v = 0
    for x in b:
        v = (v << 8) | x
    return v


def on_curve(x, y):
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + B)) % P == 0


def _double(p):
    if p is None:
        return None
    x, y, z = p
    if y == 0:
        return None
    delta = z * z % P
    gamma = y * y % P
    beta = x * gamma % P
    alpha = 3 * (x - delta) * (x + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y + z) * (y + z) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _add(p, q):
    if p is None:
        return q
    if q is None:
        return p
    x1, y1, z1 = p
    x2, y2, z2 = q
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    if u1 == u2:
        return _double(p) if s1 == s2 else None
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    h2 = h * h % P
    h3 = h * h2 % P
    u1h2 = u1 * h2 % P
    x3 = (r * r - h3 - 2 * u1h2) % P
    y3 = (r * (u1h2 - x3) - s1 * h3) % P
    return x3, y3, h * z1 * z2 % P


def verify(pub, digest, sig, idle=None):
    """pub: 64 bytes X||Y; digest: SHA-256 of the message; sig: 64 bytes r||s. True if valid.
    idle() is called every 16 bits (the ESP32's watchdog during ~1 s of big-integer work)."""
    if len(pub) != 64 or len(sig) != 64 or len(digest) != 32:
        return False
    qx, qy = _int(pub[:32]), _int(pub[32:])
    r, s = _int(sig[:32]), _int(sig[32:])
    if not on_curve(qx, qy) or not (0 < r < N and 0 < s < N):
        return False
    w = pow(s, N - 2, N)
    u1 = _int(digest) * w % N
    u2 = r * w % N
    q = (qx, qy, 1)
    both = _add(G, q)
    acc = None
    for i in range(255, -1, -1):
        acc = _double(acc)
        b1 = (u1 >> i) & 1
        b2 = (u2 >> i) & 1
        if b1 and b2:
            acc = _add(acc, both)
        elif b1:
            acc = _add(acc, G)
        elif b2:
            acc = _add(acc, q)
        if idle is not None and not i & 15:
            idle()
    if acc is None:
        return False
    x, _, z = acc
    zi = pow(z, P - 2, P)
    return (x * zi * zi % P) % N == r
