# Store-and-forward buffer in flash: an append-only log of small segment files.
#
# Why not one ring file: LittleFS files are copy-on-write skip lists, so rewriting bytes in
# the middle of a file (a ring slot, or a header at offset 0) re-writes every block from the
# write point to the end of the file on flush. A 128 KiB ring with its header in front cost
# ~97 block erases per reading (~1 year of flash life at one reading a minute). Appending to
# the end of a file costs one block (LittleFS copies only the partial last block), and a file
# that fits in the inline limit is stored inside the directory's metadata log, so:
#   <dir>/<first id, 8 hex digits>   segment: up to `seg_records` fixed-size records, appended
#   <dir>/state                      tiny: acked id, dropped count, seq (rewritten whole)
#   record  u32 id | u32 seq | u16 length | u16 crc16 of the payload | payload (padded to the slot size)
# (the seq of the newest record is read back on boot: after a power cut that lost RTC memory the
# sequence continues, and the gateway's de-duplication on device + seq never eats new readings)
# Ids grow by one per record. Segments that are fully acknowledged are deleted; when more than
# `capacity` records are unacknowledged the oldest are given up and counted in `dropped`.
# A lost or torn state file only means records are re-sent (the gateway de-duplicates on
# device + seq); a record is never lost because of it. tests/firmware/test_unix_port.py
# counts block erases on a LittleFS block device: <= 2 per reading including acknowledgement.
import os
import struct

STATE_MAGIC = b"KCL1"
STATE_FMT = "<4sIIII"  # magic, acked, dropped, seq, crc16 (of the first 16 bytes)
SLOT_HDR = "<IIHH"
SLOT_HDR_SIZE = 12


def crc16(data, crc=0xFFFF):
    # CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): cheap and bit-exact on every port
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return None


class Ring:
    def __init__(self, path, capacity=256, slot_size=512, seg_records=16):
        self.path = path
        self.capacity = capacity
        self.slot_size = slot_size
        self.seg_records = seg_records
        self.acked = 0
        self.last = 0
        self.dropped = 0
        self.seq = 0
        self.corrupt = 0
        self.closed = False
        self.segs = []  # [first id, record count] oldest first
        self._open()

    # -- files ------------------------------------------------------------
    def _seg_path(self, first):
        return "%s/%08x" % (self.path, first)

    def _open(self):
        try:
            os.mkdir(self.path)
        except OSError:
            pass
        firsts = []
        for name in os.listdir(self.path):
            if len(name) == 8:
                try:
                    firsts.append(int(name, 16))
                except ValueError:
                    pass
        firsts.sort()
        for first in firsts:
            size = _size(self._seg_path(first)) or 0
            n = size // self.slot_size
            if size % self.slot_size:
                self._repair(first, n)  # a torn append on a file system without atomic writes
            if n:
                self.segs.append([first, n])
            else:
                os.remove(self._seg_path(first))
        st = self._read_state()
        if self.segs:
            self.last = self.segs[-1][0] + self.segs[-1][1] - 1
        if st is not None:
            self.acked, self.dropped, self.seq = st
        elif self.segs:
            self.acked = self.segs[0][0] - 1  # no state: re-send what is there (duplicates, not loss)
        if self.last < self.acked:
            self.last = self.acked
        if self.segs:
            self.seq = max(self.seq, self._record_seq(self.last))
        self._trim()

    def _record_seq(self, rid):
        first = self.segs[-1][0]
        try:
            with open(self._seg_path(first), "rb") as f:
                f.seek((rid - first) * self.slot_size)
                raw = f.read(SLOT_HDR_SIZE)
            sid, seq = struct.unpack(SLOT_HDR, raw)[:2]
            return seq if sid == rid else 0
        except (OSError, ValueError):
            return 0

    def _repair(self, first, n):
        p = self._seg_path(first)
        with open(p, "rb") as f:
            keep = f.read(n * self.slot_size)
        with open(p + ".t", "wb") as f:
            f.write(keep)
        os.rename(p + ".t", p)

    def _read_state(self):
        try:
            with open(self.path + "/state", "rb") as f:
                raw = f.read(20)
        except OSError:
            return None
        if len(raw) != 20:
            return None
        magic, acked, dropped, seq, crc = struct.unpack(STATE_FMT, raw)
        if magic != STATE_MAGIC or crc != crc16(raw[:16]):
            return None
        return acked, dropped, seq

    def _write_state(self):
        head = struct.pack("<4sIII", STATE_MAGIC, self.acked, self.dropped, self.seq)
        # whole-file rewrite of 20 bytes: inline in LittleFS metadata, one commit, no data block
        with open(self.path + "/state", "wb") as f:
            f.write(head + struct.pack("<I", crc16(head)))

    def _trim(self):
        """Delete segments whose every record is acknowledged (keep the newest unless full)."""
        while self.segs:
            first, n = self.segs[0]
            full = n >= self.seg_records
            if first + n - 1 > self.acked or (len(self.segs) == 1 and not full):
                break
            try:
                os.remove(self._seg_path(first))
            except OSError:
                pass
            self.segs.pop(0)

    def close(self):
        self.closed = True

    # -- API -------------------------------------------------------------
    def __len__(self):
        return self.last - self.acked

    def max_payload(self):
        return self.slot_size - SLOT_HDR_SIZE

    def push(self, payload, seq=None):
        """Append one record; when full the oldest is given up and counted in `dropped`."""
        if len(payload) > self.max_payload():
            raise ValueError("record larger than a slot")
        rid = self.last + 1
        if not self.segs or self.segs[-1][1] >= self.seg_records or self.segs[-1][0] + self.segs[-1][1] != rid:
            self.segs.append([rid, 0])
        seg = self.segs[-1]
        if seq is not None:
            self.seq = seq
        rec = struct.pack(SLOT_HDR, rid, self.seq, len(payload), crc16(payload)) + payload
        rec += b"\xff" * (self.slot_size - len(rec))
        with open(self._seg_path(seg[0]), "ab") as f:
            f.write(rec)
        seg[1] += 1
        self.last = rid
        if self.last - self.acked > self.capacity:
            self.dropped += self.last - self.acked - self.capacity
            self.acked = self.last - self.capacity
            self._write_state()
            self._trim()
        return rid

    def oldest_id(self):
        return self.acked + 1 if self.last > self.acked else None

    def get(self, rid):
        """Payload of record rid, or None if it is gone (acked/given up) or corrupt."""
        if rid <= self.acked or rid > self.last:
            return None
        for first, n in self.segs:
            if first <= rid < first + n:
                break
        else:
            return None
        try:
            with open(self._seg_path(first), "rb") as f:
                f.seek((rid - first) * self.slot_size)
                raw = f.read(self.slot_size)
        except OSError:
            raw = b""
        if len(raw) < SLOT_HDR_SIZE:
            self.corrupt += 1
            return None
        sid, _, n, crc = struct.unpack(SLOT_HDR, raw[:SLOT_HDR_SIZE])
        data = raw[SLOT_HDR_SIZE:SLOT_HDR_SIZE + n]
        if sid != rid or n > self.max_payload() or crc16(data) != crc:
            self.corrupt += 1
            return None
        return bytes(data)

    def ack(self, rid):
        """Everything up to and including rid has been delivered."""
        if rid > self.acked:
            self.acked = min(rid, self.last)
            self._write_state()
            self._trim()

    def save_seq(self, seq):
        if seq != self.seq:
            self.seq = seq
            self._write_state()
