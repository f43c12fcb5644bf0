# Bosch BME280 temperature/humidity/pressure sensor over I2C (address 0x76 or 0x77).
#
# Bosch Sensortec "BME280 Combined humidity and pressure sensor" datasheet BST-BME280-DS002:
#   5.3 memory map: chip id 0xD0 (= 0x60), reset 0xE0 (write 0xB6), ctrl_hum 0xF2, status 0xF3,
#       ctrl_meas 0xF4, config 0xF5, data 0xF7..0xFE (press msb/lsb/xlsb, temp msb/lsb/xlsb, hum msb/lsb);
#   4.2.2 table 16 trimming parameters: dig_T1..T3 at 0x88..0x8D, dig_P1..P9 0x8E..0x9F,
#       dig_H1 0xA1, dig_H2 0xE1/0xE2, dig_H3 0xE3, dig_H4 0xE4/0xE5[3:0], dig_H5 0xE5[7:4]/0xE6, dig_H6 0xE7;
#   4.2.3 compensation formulas, 32-bit integer versions BME280_compensate_T_int32 (0.01 degC)
#       and bme280_compensate_H_int32 (Q22.10 %RH); 3.3 forced mode: one measurement, then sleep;
#   3.5.1 "weather monitoring": forced mode, oversampling x1 for T/P/H, filter off.
# Pressure is not a catalogue field, so only T and H are compensated here.
import struct

ADDR = 0x76
CHIP_ID = 0x60
REG_ID = 0xD0
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_DATA = 0xF7


def parse_calibration(c1, c2):
    """Trimming parameters from the 26 bytes at 0x88 and the 7 bytes at 0xE1."""
    t1, t2, t3 = struct.unpack("<Hhh", c1[0:6])
    h1 = c1[25]
    h2 = struct.unpack("<h", c2[0:2])[0]
    h3 = c2[2]
    h4 = (c2[3] << 4) | (c2[4] & 0x0F)
    if h4 & 0x800:
        h4 -= 0x1000
    h5 = (c2[5] << 4) | (c2[4] >> 4)
    if h5 & 0x800:
        h5 -= 0x1000
    h6 = c2[6] - 256 if c2[6] > 127 else c2[6]
    return (t1, t2, t3, h1, h2, h3, h4, h5, h6)


def compensate_t(adc_t, cal):
    """(temperature in 0.01 degC, t_fine) - datasheet 4.2.3 BME280_compensate_T_int32."""
    t1, t2, t3 = cal[0], cal[1], cal[2]
    var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
    var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def compensate_h(adc_h, t_fine, cal):
    """Relative humidity in Q22.10 (%RH * 1024) - datasheet 4.2.3 bme280_compensate_H_int32."""
    h1, h2, h3, h4, h5, h6 = cal[3], cal[4], cal[5], cal[6], cal[7], cal[8]
    v = t_fine - 76800
    v = ((((adc_h << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) * (
        ((((((v * h6) >> 10) * (((v * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4)
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12


class BME280:
    def __init__(self, i2c, addr=ADDR, sleep_ms=None):
        self.i2c = i2c
        self.addr = addr
        self.sleep_ms = sleep_ms
        cid = i2c.readfrom_mem(addr, REG_ID, 1)[0]
        if cid != CHIP_ID:
            raise OSError("BME280 not found (chip id 0x%02x)" % cid)
        self.cal = parse_calibration(i2c.readfrom_mem(addr, 0x88, 26), i2c.readfrom_mem(addr, 0xE1, 7))
        # ctrl_hum only takes effect after a write to ctrl_meas (datasheet 5.4.3)
        i2c.writeto_mem(addr, REG_CTRL_HUM, b"\x01")

    def read_raw(self):
        # forced mode, osrs_t = osrs_p = x1 (datasheet 3.5.1 weather monitoring)
        self.i2c.writeto_mem(self.addr, REG_CTRL_MEAS, bytes([(1 << 5) | (1 << 2) | 1]))
        for _ in range(20):
            if self.sleep_ms:
                self.sleep_ms(5)
            if not self.i2c.readfrom_mem(self.addr, REG_STATUS, 1)[0] & 0x08:
                break
        d = self.i2c.readfrom_mem(self.addr, REG_DATA, 8)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        return adc_t, adc_h

    def read(self):
        """{'temperature': degC, 'humidity': %RH} or None for the 'skipped' marker 0x80000."""
        adc_t, adc_h = self.read_raw()
        if adc_t == 0x80000:
            return None
        t, t_fine = compensate_t(adc_t, self.cal)
        h = compensate_h(adc_h, t_fine, self.cal)
        return {"temperature": t / 100, "humidity": h / 1024}
