# Winsen MH-Z19B NDIR CO2 sensor over UART (9600 8N1).
#
# Winsen "MH-Z19B Intelligent Infrared Gas Module User's Manual" V1.0 (2016):
#   commands are 9 bytes: 0xFF, sensor 0x01, command, 5 data bytes, checksum;
#   0x86 read CO2: reply 0xFF 0x86 HIGH LOW - - - - checksum, CO2 ppm = HIGH*256 + LOW;
#   0x87 zero point calibration (400 ppm fresh air, after 20 min), 0x79 self-calibration on/off
#   (0xA0 on / 0x00 off), 0x99 detection range (bytes 6..7 = range, e.g. 5000).
#   checksum = (0xFF - (byte1 + ... + byte7)) + 1, i.e. two's complement of bytes 1..7.
# Same manual, main parameters: "Preheat time: 3 min"; readings before that are not valid.
PREHEAT_MS = 180000
CMD_READ = 0x86
CMD_ZERO = 0x87
CMD_ABC = 0x79


def checksum(pkt):
    return (0xFF - (sum(pkt[1:8]) & 0xFF) + 1) & 0xFF


def command(cmd, b3=0, b4=0, b5=0, b6=0, b7=0):
    p = bytearray([0xFF, 0x01, cmd, b3, b4, b5, b6, b7, 0])
    p[8] = checksum(p)
    return bytes(p)


def parse_response(resp):
    """CO2 ppm of a 0x86 reply or None (bad header/length/checksum)."""
    if resp is None or len(resp) != 9 or resp[0] != 0xFF or resp[1] != CMD_READ:
        return None
    if checksum(resp) != resp[8]:
        return None
    return resp[2] * 256 + resp[3]


class MHZ19B:
    def __init__(self, uart, abc=False):
        self.uart = uart
        self.bad = 0
        # ABC assumes the sensor sees 400 ppm daily; a street cabinet in a city does not
        self.uart.write(command(CMD_ABC, 0xA0 if abc else 0x00))
        self._drain()

    def _drain(self):
        while self.uart.any():
            self.uart.read()

    def read(self):
        self._drain()
        self.uart.write(command(CMD_READ))
        ppm = parse_response(self.uart.read(9))
        if ppm is None:
            self.bad += 1
        return ppm

    def calibrate_zero(self):
        self.uart.write(command(CMD_ZERO))
        self._drain()
