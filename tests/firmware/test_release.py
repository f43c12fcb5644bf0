"""Signed app updates: host signing (cryptography) against the board's own ECDSA P-256 verifier
(kc_ecdsa) on CPython and on the MicroPython unix port; A/B staging, rollback, mark_good."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from firmware import build, release, unixport
from firmware.virtual import device_path

device_path()
import kc_ecdsa  # type: ignore[import-not-found]  # noqa: E402
import kc_update  # type: ignore[import-not-found]  # noqa: E402


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    path = tmp_path_factory.mktemp("keys") / "release.pem"
    release.generate_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    return release.load_key(path)


def vectors(key, n: int = 4) -> list[tuple[str, str, str, bool]]:  # noqa: ANN001
    """(pub hex, digest hex, sig hex, expected) - valid ones and tampered ones."""
    pub = release.public_key_hex(key)
    out = []
    for i in range(n):
        msg = os.urandom(40 + i)
        sig = release.sign(key, msg)
        d = hashlib.sha256(msg).digest()
        out.append((pub, d.hex(), sig.hex(), True))
        out.append((pub, hashlib.sha256(msg + b"x").digest().hex(), sig.hex(), False))  # other message
        bad = bytearray(sig)
        bad[40] ^= 1
        out.append((pub, d.hex(), bytes(bad).hex(), False))  # flipped bit in s
    other = release.public_key_hex(__import__("cryptography.hazmat.primitives.asymmetric.ec", fromlist=["ec"])
                                   .generate_private_key(__import__("cryptography.hazmat.primitives.asymmetric.ec",
                                                                    fromlist=["ec"]).SECP256R1()))
    msg = b"update"
    out.append((other, hashlib.sha256(msg).hexdigest(), release.sign(key, msg).hex(), False))  # wrong key
    out.append(("00" * 63 + "01", hashlib.sha256(msg).hexdigest(), release.sign(key, msg).hex(), False))  # off curve
    return out


def test_ecdsa_p256_against_cryptography_on_cpython(key) -> None:  # noqa: ANN001
    for pub, d, sig, want in vectors(key):
        assert kc_ecdsa.verify(bytes.fromhex(pub), bytes.fromhex(d), bytes.fromhex(sig)) is want


@pytest.mark.micropython
def test_ecdsa_p256_on_micropython_unix_port(key) -> None:  # noqa: ANN001
    vs = vectors(key)
    script = ("import json, time, kc_ecdsa\nfrom binascii import unhexlify as u\n"
              f"vs = json.loads({json.dumps(json.dumps(vs))})\nt0 = time.ticks_ms()\n"
              "res = [kc_ecdsa.verify(u(p), u(d), u(s)) for p, d, s, w in vs]\n"
              "print('RES ' + json.dumps({'res': res, 'ms': time.ticks_diff(time.ticks_ms(), t0) // len(vs)}))\n")
    r = unixport.run(script).tagged("RES")
    assert r["res"] == [w for *_, w in vs]
    print(f"ECDSA P-256 verify on the unix port: {r['ms']} ms each")


def test_signed_update_stage_rollback_and_mark_good(key, tmp_path: Path) -> None:  # noqa: ANN001
    bundle = tmp_path / "bundle"
    (bundle / "kc_drivers").mkdir(parents=True)
    (bundle / "kc_node.mpy").write_bytes(b"M\x06new node")
    (bundle / "kc_drivers" / "pms5003.mpy").write_bytes(b"M\x06new driver")
    manifest, sig = release.make_update(bundle, "air", "1.2.0", key)
    pub = release.public_key_hex(key)
    doc = kc_update.verify_manifest(manifest, sig, pub, kind="air")
    assert doc["fw"] == "1.2.0" and set(doc["files"]) == {"kc_node.mpy", "kc_drivers/pms5003.mpy"}
    with pytest.raises(kc_update.UpdateError, match="signature"):
        kc_update.verify_manifest(manifest.replace(b"1.2.0", b"6.6.6"), sig, pub)
    with pytest.raises(kc_update.UpdateError, match="kind"):
        kc_update.verify_manifest(manifest, sig, pub, kind="water")

    root = str(tmp_path / "board")
    os.mkdir(root)

    def fetch(name: str):  # noqa: ANN202  chunks, as an HTTP body or MQTT messages would arrive
        data = (bundle / name).read_bytes()
        return [data[:3], data[3:]]

    assert kc_update.stage(doc, fetch, root) == "a"
    assert (Path(root) / "app_a" / "kc_drivers" / "pms5003.mpy").read_bytes() == b"M\x06new driver"
    assert kc_update.boot_select(root) == "/app_a"  # boot 1 of the pending slot
    assert kc_update.mark_good(root) and not kc_update.load_state(root)["pending"]

    # a second update whose files do not match the signed hashes is refused; slot a stays active
    with pytest.raises(kc_update.UpdateError, match="hash"):
        kc_update.stage(doc, lambda name: [b"tampered"], root)
    assert kc_update.load_state(root)["active"] == "a"

    # an update that never proves itself (crashes before delivering) is rolled back after 3 boots
    assert kc_update.stage(doc, fetch, root) == "b"
    assert [kc_update.boot_select(root) for _ in range(4)] == ["/app_b"] * 3 + ["/app_a"]
    st = kc_update.load_state(root)
    assert st["active"] == "a" and not st["pending"] and st["rolled_back"] == "1.2.0"


def test_freeze_manifest_lists_every_device_module() -> None:
    """firmware/manifest.py (run by MicroPython's makemanifest with these functions) freezes exactly
    the modules a bundle holds: a new device module cannot be left out of the board image."""
    got: dict[str, list[str]] = {"include": [], "module": [], "package": []}
    funcs = {k: (lambda k: lambda name, **kw: got[k].append(name))(k) for k in got}
    path = Path(release.__file__).with_name("manifest.py")
    exec(compile(path.read_text(), str(path), "exec"), funcs)
    assert sorted(got["module"]) == sorted(p.name for p in build.common_modules())
    assert got["package"] == ["kc_drivers"] and got["include"] == ["$(PORT_DIR)/boards/manifest.py"]
