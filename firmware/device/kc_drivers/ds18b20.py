# Maxim DS18B20 1-Wire digital thermometer (waterproof probe).
#
# Maxim Integrated DS18B20 datasheet 19-7487 Rev 6:
#   ROM commands: SKIP ROM 0xCC, MATCH ROM 0x55; function commands: CONVERT T 0x44,
#   READ SCRATCHPAD 0xBE; scratchpad = 9 bytes: T LSB, T MSB, TH, TL, config, 0xFF, -, 0x10, CRC;
#   temperature register: 16-bit two's complement, 0.0625 degC/LSB at 12-bit resolution;
#   max conversion time 750 ms at 12 bits; power-on reset value +85 degC (0x0550);
#   CRC generator x^8 + x^5 + x^4 + 1 (Maxim application note 27), LSB first.
SKIP_ROM = 0xCC
MATCH_ROM = 0x55
CONVERT_T = 0x44
READ_SCRATCHPAD = 0xBE
POWER_ON_RAW = 0x0550


def crc8(data):
    crc = 0
    for b in data:
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C  # 0x31 reflected
            b >>= 1
    return crc


def parse_scratchpad(sp):
    """Temperature in degC or None (CRC error, or the power-on value meaning no conversion ran)."""
    if len(sp) != 9 or crc8(sp[:8]) != sp[8]:
        return None
    raw = sp[0] | (sp[1] << 8)
    if raw == POWER_ON_RAW:
        return None
    if raw & 0x8000:
        raw -= 0x10000
    return raw / 16


class DS18B20:
    def __init__(self, ow, rom=None, sleep_ms=None):
        self.ow = ow
        self.rom = rom
        self.sleep_ms = sleep_ms
        self.crc_errors = 0

    def _select(self):
        if not self.ow.reset():
            raise OSError("DS18B20: no presence pulse")
        if self.rom is None:
            self.ow.writebyte(SKIP_ROM)
        else:
            self.ow.writebyte(MATCH_ROM)
            self.ow.write(self.rom)

    def read(self):
        self._select()
        self.ow.writebyte(CONVERT_T)
        if self.sleep_ms:
            self.sleep_ms(750)
        self._select()
        self.ow.writebyte(READ_SCRATCHPAD)
        sp = bytearray(9)
        self.ow.readinto(sp)
        t = parse_scratchpad(sp)
        if t is None:
            self.crc_errors += 1
        return t
