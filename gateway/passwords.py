"""MQTT device credentials in Mosquitto's own password-file format.

Mosquitto 2.0 ``password_file`` lines are ``user:$7$<iterations>$<salt b64>$<hash b64>``
where the hash is PBKDF2-HMAC-SHA512 (64 bytes) of the password with a 12-byte salt,
101 iterations by default (mosquitto ``src/password_mosq.c``, ``mosquitto_passwd``;
checked against the output of ``mosquitto_passwd -b`` 2.0.11 in tests). Writing it
ourselves means provisioning needs no broker binary and the registry never holds a
clear password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 101  # mosquitto's default for $7$; the format carries the count, so a raise stays compatible
SALT_BYTES = 12


def new_password(nbytes: int = 18) -> str:
    """A URL-safe random password (144 bits) that survives copy/paste into a device's config."""
    return secrets.token_urlsafe(nbytes)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, alg, iters, salt_b64, hash_b64 = encoded.split("$")
        if alg != "7":
            return False
        salt, want = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iters), dklen=len(want))
    return hmac.compare_digest(got, want)
