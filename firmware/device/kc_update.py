# Signed application updates with A/B slots and rollback.
#
# An update is a manifest (JSON: {"v":1, "fw":"1.3.0", "kind":"air", "files":{"kc_node.mpy":
# {"sha256":"..", "size":n}, ..}}) and an ECDSA P-256 signature over its SHA-256 (64 bytes
# r||s), made by `firmware/release.py` with the release key; the board holds only the public key
# (config.json "update_pubkey", hex X||Y). Files arrive by any transport (HTTP download or MQTT
# chunks: `fetch(name)` yields byte chunks) into the slot that is not running (/app_a, /app_b);
# each is checked against the signed hash and size before the slot is switched in /app.json.
# main.py puts the active slot first on sys.path. The new slot is "pending" until the node
# delivers a reading (mark_good); after MAX_TRIES boots without that, boot_select() rolls
# back to the previous slot. Full MicroPython images use esp32.Partition (write_image) with
# the bootloader's own rollback.
import json

STATE = "/app.json"
MAX_TRIES = 3
SLOTS = ("a", "b")


class UpdateError(Exception):
    pass


def _sha256():
    import hashlib
    return hashlib.sha256()


def _hex(b):
    return "".join("%02x" % x for x in b)


def verify_manifest(manifest, sig, pubkey_hex, kind=None, idle=None):
    """The manifest dict if the signature is valid (and it is for this kind); else UpdateError."""
    import kc_ecdsa  # only when an update arrives: ~3 KB of heap the node does not need otherwise
    h = _sha256()
    h.update(manifest)
    pub = bytes(int(pubkey_hex[i:i + 2], 16) for i in range(0, len(pubkey_hex), 2))
    if not kc_ecdsa.verify(pub, h.digest(), sig, idle):
        raise UpdateError("bad signature")
    try:
        doc = json.loads(manifest)
    except ValueError:
        raise UpdateError("manifest is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("files"), dict):
        raise UpdateError("unsupported manifest")
    if kind is not None and doc.get("kind") != kind:
        raise UpdateError("update is for kind %r" % doc.get("kind"))
    for name in doc["files"]:
        if not isinstance(name, str) or name.startswith("/") or ".." in name or not name:
            raise UpdateError("bad file name %r" % name)
    if doc.get("image") is not None and (doc["image"] not in doc["files"] or len(doc["files"]) != 1):
        raise UpdateError("an image release holds exactly its image file")
    return doc


def load_state(root=""):
    try:
        with open(root + STATE) as f:
            st = json.load(f)
        # active None: the base install (or a full image) runs, but the state still matters
        if isinstance(st, dict) and "active" in st and (st["active"] is None or st["active"] in SLOTS):
            return st
    except (OSError, ValueError):
        pass
    return {"active": None, "previous": None, "pending": False, "tries": 0}


def save_state(st, root=""):
    with open(root + STATE + ".tmp", "w") as f:
        f.write(json.dumps(st))
    import os
    os.rename(root + STATE + ".tmp", root + STATE)


def _mkdirs(path):
    import os
    cur = ""
    for part in path.split("/")[1:-1]:
        cur += "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def _clear(path):
    """Remove a slot directory's contents: a file an older release left there would otherwise
    still shadow the base install on sys.path."""
    import os
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        p = path + "/" + name
        try:
            os.remove(p)
        except OSError:  # a directory
            _clear(p)
            os.rmdir(p)


def stage(doc, fetch, root="", idle=None, cmd=None):
    """Write every file of a verified manifest into the idle slot, checking hash and size; then
    make that slot active and pending. Returns the slot. A failure leaves the running slot as is.
    `cmd` (the update command's id) is kept so the node can confirm or report a rollback later."""
    st = load_state(root)
    slot = "b" if st["active"] == "a" else "a"
    base = root + "/app_" + slot
    _clear(base)
    for name, meta in doc["files"].items():
        path = base + "/" + name
        _mkdirs(path)
        h = _sha256()
        n = 0
        with open(path, "wb") as f:
            for chunk in fetch(name):
                f.write(chunk)
                h.update(chunk)
                n += len(chunk)
                if idle is not None:
                    idle()
        if n != meta.get("size") or _hex(h.digest()) != meta.get("sha256"):
            raise UpdateError("%s: hash or size differs from the signed manifest" % name)
    save_state({"active": slot, "previous": st["active"], "pending": True, "tries": 0,
                "fw": doc.get("fw"), "prev_fw": st.get("fw"), "cmd": cmd}, root)
    return slot


def boot_select(root=""):
    """At boot (main.py): the slot directory to import from, or None for the base install.
    Counts boots of a pending slot and rolls back after MAX_TRIES."""
    st = load_state(root)
    if st["active"] is None:
        return None
    if st.get("pending"):
        st["tries"] = st.get("tries", 0) + 1
        if st["tries"] > MAX_TRIES:
            st = {"active": st.get("previous"), "previous": None, "pending": False, "tries": 0,
                  "fw": st.get("prev_fw"), "rolled_back": st.get("fw"), "cmd": st.get("cmd")}
        save_state(st, root)
        if st["active"] is None:
            return None
    return "/app_" + st["active"]


def mark_good(root=""):
    """The running slot works (the node delivered a reading): no rollback any more."""
    st = load_state(root)
    if st.get("pending"):
        st["pending"] = False
        st["tries"] = 0
        save_state(st, root)
        return True
    return False


def running_partition():
    """Label of the app partition the bootloader started (e.g. 'ota_0'); None without esp32."""
    try:
        import esp32
    except ImportError:
        return None
    return esp32.Partition(esp32.Partition.RUNNING).info()[4]  # type: ignore[arg-type]


def write_image(chunks, sha256_hex, idle=None, size=None):
    """Full MicroPython image into the next OTA partition (esp32.Partition), then boot it once;
    the new image must call esp32.Partition.mark_app_valid_cancel_rollback() or the bootloader
    returns to the old one. Returns the partition's label. On a board, or on the unix port with
    the fake esp32 module of firmware/fakes/unix (WebAssembly has none)."""
    import esp32
    # RUNNING is an int constant; the stubs only know labels
    part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()  # type: ignore[arg-type]
    block = part.ioctl(5, 0) or 4096
    if size is not None and size > (part.ioctl(4, 0) or 0) * block:
        raise UpdateError("image of %d bytes does not fit the %s partition" % (size, part.info()[4]))
    buf = bytearray()
    h = _sha256()
    n = 0
    for chunk in chunks:
        h.update(chunk)
        buf.extend(chunk)
        while len(buf) >= block:
            part.writeblocks(n, buf[:block])
            buf = buf[block:]
            n += 1
            if idle is not None:
                idle()
    total = n * block + len(buf)
    if buf:
        part.writeblocks(n, bytes(buf) + b"\xff" * (block - len(buf)))
    if _hex(h.digest()) != sha256_hex or (size is not None and total != size):
        raise UpdateError("image hash or size differs from the signed manifest")
    part.set_boot()
    return part.info()[4]


def stage_image(doc, fetch, root="", idle=None, cmd=None):
    """An image release: the image into the next OTA partition, then the state records it pending.
    App slots are left behind (active None), or their modules would shadow the new frozen ones;
    a rollback by the bootloader brings the previous slot back (image_boot_check)."""
    name = doc["image"]
    meta = doc["files"][name]
    st = load_state(root)
    label = write_image(fetch(name), meta.get("sha256"), idle, meta.get("size"))
    save_state({"active": None, "previous": st["active"], "pending": True, "tries": 0, "fw": doc.get("fw"),
                "prev_fw": st.get("fw"), "cmd": cmd, "image": label}, root)
    return label


def image_boot_check(root=""):
    """At boot: after an image update, is the new image what runs? If the bootloader went back to
    the old one (the new image never marked itself valid), record the rollback. Returns the state."""
    st = load_state(root)
    if st.get("image") and st.get("pending"):
        if running_partition() == st["image"]:
            st["tries"] = st.get("tries", 0) + 1
        else:
            st = {"active": st.get("previous"), "previous": None, "pending": False, "tries": 0,
                  "fw": st.get("prev_fw"), "rolled_back": st.get("fw"), "cmd": st.get("cmd")}
        save_state(st, root)
    return st


def mark_image_valid():
    """Tell the bootloader the running image works (no rollback at the next reset)."""
    import esp32
    esp32.Partition.mark_app_valid_cancel_rollback()
