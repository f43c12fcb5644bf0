# Plantower PMS5003 particulate sensor over UART (9600 8N1).
#
# Plantower "PMS5003 series data manual" V2.3 (2016), appendix I "transport protocol - active mode":
#   32-byte frame: 0x42 0x4D, frame length (u16 BE) = 2*13+2 = 28, then 13 u16 BE data words:
#     data1..3 PM1.0/PM2.5/PM10 (CF=1, standard particle), data4..6 PM1.0/PM2.5/PM10 under
#     atmospheric environment (ug/m3), data7..12 particle counts, data13 reserved;
#   check code (u16 BE) = sum of all preceding 30 bytes.
# Appendix II, host commands (7 bytes): 0x42 0x4D CMD DATAH DATAL LRCH LRCL, LRC = sum of the
#   first 5 bytes: 0xE2 read (passive), 0xE1 mode (0 passive / 1 active), 0xE4 sleep (0) / wakeup (1).
# After wake-up the fan needs ~30 s for stable readings (manual, "stable data should be got at
# least 30 seconds after the sensor wakeup").
import struct

FRAME_LEN = 32
WARMUP_MS = 30000
# Humidity. The PMS5003 has no inlet dryer: above ~75 % RH particles take up water and the PM
# readings rise (Jayaratne et al. 2018, "The influence of humidity on the performance of a low-cost
# air particle mass sensor and the effect of atmospheric fog", AMT 11, 4883-4890,
# doi:10.5194/amt-11-4883-2018, with a Plantower PMS1003). The correction is the kappa-Koehler mass
# growth factor used for low-cost OPCs by Crilley et al. 2018 (AMT 11, 709-720,
# doi:10.5194/amt-11-709-2018):  C(RH) = 1 + (kappa / 1.65) / (-1 + 100 / RH).
# kappa of ambient PM2.5 measured with low-cost OPCs in (sub)tropical Asia: 0.15-0.29 (Huang et al.
# 2024, AMT 17, 6073-6089, doi:10.5194/amt-17-6073-2024); default 0.2, a calibration constant.
# Below RH_REF the factory calibration is taken as is; above it the extra growth C(RH)/C(RH_REF)
# is divided out, so the correction is continuous. Above RH_MAX (fog, droplets) the optical
# reading says nothing about dry PM: the fields are left out (counted by the suite).
RH_REF = 80.0
RH_MAX = 95.0
CMD_READ = 0xE2
CMD_MODE = 0xE1
CMD_SLEEP = 0xE4


def command(cmd, data=0):
    head = bytes([0x42, 0x4D, cmd, (data >> 8) & 0xFF, data & 0xFF])
    return head + struct.pack(">H", sum(head))


def parse_frame(frame):
    """{'pm1','pm25','pm10'} (atmospheric, ug/m3) or None if the frame is not valid."""
    if len(frame) != FRAME_LEN or frame[0] != 0x42 or frame[1] != 0x4D:
        return None
    if struct.unpack(">H", frame[2:4])[0] != 28:
        return None
    if sum(frame[:30]) & 0xFFFF != struct.unpack(">H", frame[30:32])[0]:
        return None
    w = struct.unpack(">13H", frame[4:30])
    return {"pm1": w[3], "pm25": w[4], "pm10": w[5], "pm25_cf1": w[1]}


def growth(rh, kappa):
    return 1 + (kappa / 1.65) / (-1 + 100.0 / rh)


def humidity_correct(pm, rh, kappa=0.2, rh_ref=RH_REF):
    """Dry-equivalent PM (ug/m3) for a reading at rh (% RH); None above RH_MAX."""
    if rh is None or kappa <= 0 or rh <= rh_ref:
        return pm
    if rh > RH_MAX:
        return None
    return pm * growth(rh_ref, kappa) / growth(rh, kappa)


def find_frame(buf):
    """Latest valid frame in a byte stream (resynchronises on 0x42 0x4D), or None."""
    best = None
    i = 0
    n = len(buf)
    while i <= n - FRAME_LEN:
        if buf[i] == 0x42 and buf[i + 1] == 0x4D:
            r = parse_frame(bytes(buf[i:i + FRAME_LEN]))
            if r is not None:
                best = r
                i += FRAME_LEN
                continue
        i += 1
    return best


class PMS5003:
    def __init__(self, uart, sleep_ms=None):
        self.uart = uart
        self.sleep_ms = sleep_ms
        self.bad_frames = 0
        # passive mode: the sensor answers only when asked, so the UART never overflows
        self.uart.write(command(CMD_MODE, 0))

    def sleep(self):
        self.uart.write(command(CMD_SLEEP, 0))

    def wake(self):
        self.uart.write(command(CMD_SLEEP, 1))

    def read(self):
        while self.uart.any():  # drop stale bytes
            self.uart.read()
        self.uart.write(command(CMD_READ))
        if self.sleep_ms:
            self.sleep_ms(100)
        buf = self.uart.read(64) or b""
        r = find_frame(buf)
        if r is None:
            self.bad_frames += 1
        return r
