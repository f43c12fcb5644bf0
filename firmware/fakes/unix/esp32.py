# Stand-in for MicroPython's esp32.Partition and the ESP-IDF bootloader's OTA rollback, for the
# unix port (which has no esp32 module). Two app partitions ota_0/ota_1 are files in DIR and
# otadata.json says which one boots and in which state; every process start is a boot
# (`boot()`, called by kc_unix_run before the node). The bootloader rules of ESP-IDF's
# "App rollback" (docs.espressif.com, ota: CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE): an image
# made bootable by set_boot starts as "new"; its first boot makes it "pending_verify"; if it
# boots again still pending (the app never called mark_app_valid_cancel_rollback) it is
# "aborted" and the previous valid partition boots instead.
# API: https://docs.micropython.org/en/latest/library/esp32.html#flash-partitions
import json
import os

DIR = None
BLOCK = 4096
BLOCKS = 64  # 256 KiB per fake partition: enough for a test image
LABELS = ("ota_0", "ota_1")
_running = None


def _path(name):
    return DIR + "/" + name


def _load():
    try:
        with open(_path("otadata.json")) as f:
            return json.load(f)
    except OSError:
        return {"boot": "ota_0", "state": {"ota_0": "valid", "ota_1": "empty"}, "boots": 0}


def _save(d):
    with open(_path("otadata.json"), "w") as f:
        f.write(json.dumps(d))


def boot(directory):
    """The bootloader: pick the partition to run; returns its label."""
    global DIR, _running
    DIR = directory
    try:
        os.mkdir(DIR)
    except OSError:
        pass
    d = _load()
    label = d["boot"]
    st = d["state"]
    if st.get(label) == "new":
        st[label] = "pending_verify"
    elif st.get(label) == "pending_verify":
        st[label] = "aborted"
        label = LABELS[1 - LABELS.index(label)]
        d["boot"] = label
    d["boots"] = d.get("boots", 0) + 1
    _save(d)
    _running = label
    return label


class Partition:
    BOOT = 0
    RUNNING = 1

    def __init__(self, id, block_size=BLOCK):
        if id == Partition.RUNNING:
            id = _running
        elif id == Partition.BOOT:
            id = _load()["boot"]
        if id not in LABELS:
            raise ValueError("no partition %r" % (id,))
        self.label = id

    def info(self):
        # (type, subtype, address, size, label, encrypted); app type 0, ota_N subtype 0x10 + N
        i = LABELS.index(self.label)
        return (0, 0x10 + i, 0x10000 + i * BLOCKS * BLOCK, BLOCKS * BLOCK, self.label, False)

    def get_next_update(self):
        return Partition(LABELS[1 - LABELS.index(self.label)])

    def ioctl(self, op, arg):
        if op == 4:
            return BLOCKS
        if op == 5:
            return BLOCK
        return 0

    def readblocks(self, block, buf):
        with open(_path(self.label + ".bin"), "rb") as f:
            f.seek(block * BLOCK)
            data = f.read(len(buf))
        buf[:len(data)] = data

    def writeblocks(self, block, buf):
        if self.label == _running:
            raise OSError(1)  # EPERM: IDF refuses to write the running app
        if block * BLOCK + len(buf) > BLOCKS * BLOCK:
            raise OSError(28)
        path = _path(self.label + ".bin")
        try:
            f = open(path, "r+b")
        except OSError:
            f = open(path, "w+b")
        with f:
            f.seek(block * BLOCK)
            f.write(buf)
        d = _load()
        d["state"][self.label] = "empty"  # a half-written image is never bootable
        _save(d)

    def set_boot(self):
        d = _load()
        d["boot"] = self.label
        d["state"][self.label] = "new"
        _save(d)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        d = _load()
        d["state"][_running] = "valid"
        _save(d)
