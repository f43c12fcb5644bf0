# A RAM flash chip behind MicroPython's block-device protocol (readblocks/writeblocks with
# offsets, ioctl), counting what wears flash out: block erases (ioctl 6). Mounted with
# vfs.VfsLfs2 on the unix port it is the file system a board's /data lives on.
# Protocol: https://docs.micropython.org/en/latest/library/vfs.html#block-devices
IOCTL_INIT = 1
IOCTL_SYNC = 3
IOCTL_COUNT = 4
IOCTL_SIZE = 5
IOCTL_ERASE = 6


class CountingFlash:
    def __init__(self, blocks=64, block_size=4096):
        self.block_size = block_size
        self.blocks = blocks
        self.data = bytearray(b"\xff" * (blocks * block_size))
        self.erases = 0
        self.per_block = bytearray(blocks)  # wraps at 255, only for "is wear spread" checks
        self.programmed = 0

    def readblocks(self, block, buf, offset=0):
        a = block * self.block_size + offset
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        if offset is None:  # the simple protocol: whole blocks, erase implied
            for i in range(len(buf) // self.block_size):
                self.ioctl(IOCTL_ERASE, block + i)
            offset = 0
        a = block * self.block_size + offset
        for i in range(len(buf)):  # NOR flash programs 1 -> 0 only
            self.data[a + i] &= buf[i]
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == IOCTL_COUNT:
            return self.blocks
        if op == IOCTL_SIZE:
            return self.block_size
        if op == IOCTL_ERASE:
            a = arg * self.block_size
            self.data[a:a + self.block_size] = b"\xff" * self.block_size
            self.erases += 1
            self.per_block[arg] = (self.per_block[arg] + 1) & 0xFF
            return 0
        return 0
