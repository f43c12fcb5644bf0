# TI ADS1115: 16-bit delta-sigma ADC on I2C with a programmable gain amplifier, used in
# single-shot mode as the analog front end of the water probes when one is fitted.
# Register map and bit fields: TI SBAS444 (ADS111x datasheet), section 9.6 "Register Map":
#   pointer register: 0 = conversion, 1 = config (9.6.1); conversion register: 16-bit two's
#   complement, MSB first (9.6.2); config register (9.6.3):
#     [15]    OS: write 1 = start a single conversion; read 0 = converting, 1 = idle
#     [14:12] MUX: 100..111 = AIN0..AIN3 against GND (000..011: differential pairs)
#     [11:9]  PGA full-scale range: 000 +-6.144, 001 +-4.096, 010 +-2.048 (default),
#             011 +-1.024, 100 +-0.512, 101..111 +-0.256 V
#     [8]     MODE: 1 = single-shot / power-down (default)
#     [7:5]   DR: 8, 16, 32, 64, 128 (default), 250, 475, 860 samples/s
#     [4:0]   comparator; COMP_QUE = 11 disables it (and the ALERT/RDY pin)
#   LSB = FSR / 2^15 (Table 3, "Full-Scale Range and Corresponding LSB Size"): 125 uV at +-4.096 V.
#   The FSR is only the scale: no input may go beyond VDD + 0.3 V (7.1, absolute maximum), so
#   at VDD = 3.3 V the +-4.096 V range is the one that covers a 0..3.3 V probe output.
#   Data rate tolerance is -10 %..+10 % (7.5): the wait is 1/DR + 10 % before OS is polled.
ADDR = 0x48  # ADDR pin to GND (0x49 VDD, 0x4A SDA, 0x4B SCL)
REG_CONVERSION = 0
REG_CONFIG = 1
OS_BIT = 0x8000
MODE_SINGLE = 0x0100
COMP_DISABLE = 0x0003
FSR_CODES = ((6.144, 0), (4.096, 1), (2.048, 2), (1.024, 3), (0.512, 4), (0.256, 5))
RATES = (8, 16, 32, 64, 128, 250, 475, 860)
MAX_POLLS = 20


def config_word(channel, fsr=4.096, sps=128):
    """The config register value that starts one single-ended conversion of AIN`channel`."""
    if channel not in (0, 1, 2, 3):
        raise ValueError("ADS1115 channel must be 0..3")
    pga = None
    for v, code in FSR_CODES:
        if abs(v - fsr) < 1e-6:
            pga = code
    if pga is None:
        raise ValueError("ADS1115 full-scale range must be one of 6.144/4.096/2.048/1.024/0.512/0.256")
    if sps not in RATES:
        raise ValueError("ADS1115 data rate must be one of %s" % (RATES,))
    return OS_BIT | ((4 + channel) << 12) | (pga << 9) | MODE_SINGLE | (RATES.index(sps) << 5) | COMP_DISABLE


def raw_to_uv(raw, fsr):
    return raw * fsr * 1000000 // 32768


class ADS1115:
    def __init__(self, i2c, addr=ADDR, sleep_ms=None):
        self.i2c = i2c
        self.addr = addr
        self.sleep_ms = sleep_ms
        self.buf = bytearray(2)

    def read_raw(self, channel, fsr=4.096, sps=128):
        """One single-shot conversion: signed counts (-32768..32767)."""
        cfg = config_word(channel, fsr, sps)
        self.i2c.writeto_mem(self.addr, REG_CONFIG, bytes([cfg >> 8, cfg & 0xFF]))
        wait = (1100 + sps - 1) // sps + 1  # 1/DR + 10 % (DR tolerance), rounded up, in ms
        if self.sleep_ms is not None:
            self.sleep_ms(wait)
        for _ in range(MAX_POLLS):
            c = self.i2c.readfrom_mem(self.addr, REG_CONFIG, 2)
            if c[0] & 0x80:  # OS reads 1: the conversion is done and the result latched
                break
            if self.sleep_ms is not None:
                self.sleep_ms(1)
        else:
            raise OSError("ADS1115: conversion did not finish")
        d = self.i2c.readfrom_mem(self.addr, REG_CONVERSION, 2)
        v = (d[0] << 8) | d[1]
        return v - 65536 if v & 0x8000 else v

    def read_uv(self, channel, fsr=4.096, sps=128):
        return raw_to_uv(self.read_raw(channel, fsr, sps), fsr)

    def channel(self, channel, fsr=4.096, sps=128):
        config_word(channel, fsr, sps)  # refuse a bad setting when wired, not at the first reading
        return Channel(self, channel, fsr, sps)


class Channel:
    """One input as the analog drivers expect an ADC: read_uv() in microvolts."""

    def __init__(self, dev, channel, fsr, sps):
        self.dev = dev
        self.ch = channel
        self.fsr = fsr
        self.sps = sps

    def read_uv(self):
        return self.dev.read_uv(self.ch, self.fsr, self.sps)
