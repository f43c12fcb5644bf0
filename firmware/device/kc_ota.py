# The `update` command of the wire contract: fetch a signed release over HTTP, verify it, stage
# it into the idle app slot (kc_update), ack the result, reboot into it; after the reboot
# confirm it (first delivered reading) or report the rollback. Loaded only when an update
# command arrives or an update was staged, so a node that never updates pays no heap for it.
#
# Args (kc_schema.UPDATE_ARGS, checked like kotacerdas.contract.validate_update_args):
# url (release directory, ends in "/"), version, sha256 (of the manifest), signature (hex r||s).
import hashlib
import os

import kc_http
import kc_schema
import kc_update

MANIFEST_MAX = 8192  # a manifest of ~20 files is ~2 KB; more is not a release of ours


def _hex(b):
    return "".join("%02x" % x for x in b)


def _is_hex(s, n):
    if len(s) != n:
        return False
    for c in s:
        if not ("0" <= c <= "9" or "a" <= c <= "f"):
            return False
    return True


def check_args(args):
    """None if the args are a valid update; else why not (the contract's rules)."""
    if not isinstance(args, dict):
        return "update args must be an object"
    for k in kc_schema.UPDATE_ARGS:
        if not isinstance(args.get(k), str):
            return "update args need string %r" % k
    for k in args:
        if k not in kc_schema.UPDATE_ARGS:
            return "unknown update arg %r" % str(k)[:32]
    url, v = args["url"], args["version"]
    if not url.startswith("http://") or not url.endswith("/") or len(url) > kc_schema.UPDATE_URL_MAX:
        return "url must be http://.../"
    if not v or len(v) > kc_schema.FW_MAX_LEN:
        return "bad version"
    if not _is_hex(args["sha256"], kc_schema.SHA256_HEX_LEN):
        return "sha256 must be %d hex digits" % kc_schema.SHA256_HEX_LEN
    if not _is_hex(args["signature"], kc_schema.SIGNATURE_HEX_LEN):
        return "signature must be %d hex digits" % kc_schema.SIGNATURE_HEX_LEN
    return None


def _count(node, what):
    node.stats[what] = node.stats.get(what, 0) + 1


def handle(node, cid, args):
    """Run one update command to its ack. On success the node reboots a second later."""
    err = check_args(args)
    if err is not None:
        _count(node, "update_failed")
        node._ack(cid, False, err)
        return
    key = node.cfg.get("update_pubkey")
    if not key:
        _count(node, "update_failed")
        node._ack(cid, False, "no update_pubkey in config.json: updates refused")
        return
    version, url = args["version"], args["url"]
    if version == node.fw:  # a rollout re-sending after a lost ack: nothing to do
        node._ack(cid, True, "already running %s" % version, {"fw": version})
        return
    idle = node._idle  # the watchdog, and the installer LED keeps its pattern
    try:
        manifest = b"".join(kc_http.get(url + kc_schema.UPDATE_MANIFEST, idle, limit=MANIFEST_MAX))
        if _hex(hashlib.sha256(manifest).digest()) != args["sha256"]:
            raise kc_update.UpdateError("manifest sha256 differs from the command's")
        sig = bytes(int(args["signature"][i:i + 2], 16) for i in range(0, 128, 2))
        doc = kc_update.verify_manifest(manifest, sig, key, kind=node.kind, idle=idle)
        if doc.get("fw") != version:
            raise kc_update.UpdateError("manifest is for fw %r, not %r" % (doc.get("fw"), version))
        fetch = lambda name: kc_http.get(url + name, idle)  # noqa: E731
        if doc.get("image"):  # a whole MicroPython image into the next OTA partition
            slot = kc_update.stage_image(doc, fetch, node.fs_root, idle, cmd=cid)
        else:  # .mpy modules into the idle app slot
            slot = kc_update.stage(doc, fetch, node.fs_root, idle, cmd=cid)
    except (kc_update.UpdateError, OSError, ValueError) as e:
        _count(node, "update_failed")
        node.b.log("update %s refused: %s" % (version, e))
        node._ack(cid, False, ("update failed: %s" % e)[:kc_schema.ACK_DETAIL_MAX], {"fw": node.fw})
        return
    _count(node, "update_staged")
    node.b.log("update %s staged in slot %s, rebooting" % (version, slot))
    node._ack(cid, True, "staged %s in slot %s, rebooting" % (version, slot), {"fw": version, "slot": slot})
    node.reboot_at = node.b.ticks_add(node.b.ticks_ms(), 1000)


def state(root):
    """The update state (/app.json) if an update was ever staged, else None (kc_update not loaded
    for nothing: the stat is all a node that never updated pays)."""
    try:
        os.stat(root + kc_update.STATE)
    except OSError:
        return None
    return kc_update.load_state(root)


def boot(root):
    """At boot (once): the update state, with a bootloader rollback of an image recorded."""
    if state(root) is None:
        return None
    return kc_update.image_boot_check(root)


def after_link(node):
    """At the first connection after boot: a rollback (the new slot never delivered a reading in
    MAX_TRIES boots) is reported on the update command's ack, once."""
    st = state(node.fs_root)
    if st is None or not st.get("rolled_back") or st.get("reported"):
        return
    node._ack(st.get("cmd"), False, "rolled back from %s" % st["rolled_back"], {"fw": node.fw})
    st["reported"] = True
    kc_update.save_state(st, node.fs_root)


def confirm(node):
    """The running slot delivered a reading: no rollback any more; the update command is acked
    a second time with "confirmed"."""
    st = state(node.fs_root)
    # tries 0: staged but not booted yet (a reading delivered in the second before the reboot
    # proves the old slot, not the new one)
    if st is None or not st.get("pending") or not st.get("tries"):
        return False
    if st.get("image"):
        kc_update.mark_image_valid()
    if not kc_update.mark_good(node.fs_root):
        return False
    node._ack(st.get("cmd"), True, "confirmed %s" % st.get("fw"), {"fw": st.get("fw"), "slot": st.get("active")})
    return True
