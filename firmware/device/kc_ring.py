# Store-and-forward ring buffer in flash: bounded, survives reboot and deep sleep.
#
# File layout: a 32-byte header then `capacity` fixed-size slots.
#   header  "KCRB" | u16 layout version | u16 slot size | u32 capacity |
#           u32 acked (last id removed) | u32 last (last id written) | u32 dropped | u32 seq | u32 crc
#   slot    u32 id | u16 length | u16 crc16 of the payload | payload (padded)
# Ids grow by one per record, so record `id` lives in slot `id % capacity` and the
# ring holds ids acked+1 .. last. The header is rewritten after each slot write; a
# power cut between the two leaves a slot whose id is `last + 1`, which open() finds
# by scanning forward, so a written reading is never lost. Only full slots are
# written (no read-modify-write of the file), which keeps flash wear to one slot
# and one header sector per reading on LittleFS.
import struct

MAGIC = b"KCRB"
LAYOUT = 1
HDR = "<4sHHIIIIII"
HDR_SIZE = 32
SLOT_HDR = "<IHH"
SLOT_HDR_SIZE = 8


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


class RingFull(Exception):
    pass


class Ring:
    def __init__(self, path, capacity=256, slot_size=512):
        self.path = path
        self.capacity = capacity
        self.slot_size = slot_size
        self.acked = 0
        self.last = 0
        self.dropped = 0
        self.seq = 0
        self.corrupt = 0
        self.closed = False
        self._open()

    # -- file handling ---------------------------------------------------
    def _open(self):
        try:
            f = open(self.path, "r+b")
        except OSError:
            f = None
        if f is not None:
            raw = f.read(HDR_SIZE)
            ok = len(raw) == HDR_SIZE
            if ok:
                magic, layout, slot, cap, acked, last, dropped, seq, crc = struct.unpack(HDR, raw)
                ok = magic == MAGIC and layout == LAYOUT and crc == crc16(raw[:28])
            if ok and slot == self.slot_size and cap == self.capacity:
                self._f = f
                self.acked, self.last, self.dropped, self.seq = acked, last, dropped, seq
                self._recover()
                return
            f.close()
            # a different geometry or a torn header: start empty rather than misread records,
            # but keep the sequence counter from RTC memory (see kc_node)
        self._f = open(self.path, "w+b")
        # slot by slot: the whole file (128 KiB by default) must never be one allocation on a board
        blank = b"\xff" * self.slot_size
        self._f.write(blank[:HDR_SIZE])
        for _ in range(self.capacity):
            self._f.write(blank)
        self._write_header()

    def _recover(self):
        while True:
            nxt = self.last + 1
            rid = self._slot_id(nxt)
            if rid != nxt:
                break
            self.last = nxt
        if self.last - self.acked > self.capacity:
            self.dropped += self.last - self.acked - self.capacity
            self.acked = self.last - self.capacity

    def _write_header(self):
        head = struct.pack("<4sHHIIIII", MAGIC, LAYOUT, self.slot_size, self.capacity,
                           self.acked, self.last, self.dropped, self.seq)
        self._f.seek(0)
        self._f.write(head + struct.pack("<I", crc16(head)))
        self._f.flush()

    def _slot_pos(self, rid):
        return HDR_SIZE + (rid % self.capacity) * self.slot_size

    def _slot_id(self, rid):
        self._f.seek(self._slot_pos(rid))
        raw = self._f.read(SLOT_HDR_SIZE)
        if len(raw) < SLOT_HDR_SIZE:
            return None
        return struct.unpack(SLOT_HDR, raw)[0]

    def close(self):
        if not self.closed:
            self._f.close()
            self.closed = True

    # -- API -------------------------------------------------------------
    def __len__(self):
        return self.last - self.acked

    def max_payload(self):
        return self.slot_size - SLOT_HDR_SIZE

    def push(self, payload, seq=None):
        """Append one record; when full the oldest is overwritten and counted in `dropped`."""
        if len(payload) > self.max_payload():
            raise ValueError("record larger than a slot")
        rid = self.last + 1
        rec = struct.pack(SLOT_HDR, rid, len(payload), crc16(payload)) + payload
        rec += b"\xff" * (self.slot_size - len(rec))
        self._f.seek(self._slot_pos(rid))
        self._f.write(rec)
        self.last = rid
        if self.last - self.acked > self.capacity:
            self.acked = self.last - self.capacity
            self.dropped += 1
        if seq is not None:
            self.seq = seq
        self._write_header()
        return rid

    def oldest_id(self):
        return self.acked + 1 if self.last > self.acked else None

    def get(self, rid):
        """Payload of record rid, or None if it is gone (overwritten/acked) or corrupt."""
        if rid <= self.acked or rid > self.last:
            return None
        self._f.seek(self._slot_pos(rid))
        raw = self._f.read(self.slot_size)
        sid, n, crc = struct.unpack(SLOT_HDR, raw[:SLOT_HDR_SIZE])
        data = raw[SLOT_HDR_SIZE:SLOT_HDR_SIZE + n]
        if sid != rid or n > self.max_payload() or crc16(data) != crc:
            self.corrupt += 1
            return None
        return bytes(data)

    def ack(self, rid):
        """Everything up to and including rid has been delivered."""
        if rid > self.acked:
            self.acked = min(rid, self.last)
            self._write_header()

    def save_seq(self, seq):
        self.seq = seq
        self._write_header()
