# Analog sensor channels read through a calibrated ADC (`adc.read_uv()`, microvolts;
# on the ESP32 machine.ADC.read_uv applies the eFuse calibration). Each channel
# averages a burst of samples and drops the extremes, because the ESP32 ADC is noisy.


def read_volts(adc, samples=16, divider=1.0):
    vals = sorted(adc.read_uv() for _ in range(samples))
    k = samples // 4 if samples >= 8 else 0
    core = vals[k:samples - k]
    return sum(core) / len(core) / 1e6 * divider


# pH: DFRobot SEN0161-V2 wiki / DFRobot_PH library: neutral buffer (pH 7.0) ~1.500 V,
# acid buffer (pH 4.0) ~2.032 V at 25 degC; two-point calibration sets both voltages.
# Electrode slope follows the Nernst equation, 2.303RT/F = 59.16 mV/pH at 25 degC,
# i.e. proportional to absolute temperature, so the slope is corrected to the water temperature.
class PH:
    def __init__(self, adc, v7=1.500, v4=2.032, cal_temp=25.0, divider=1.0):
        self.adc = adc
        self.v7 = v7
        self.v4 = v4
        self.cal_temp = cal_temp
        self.divider = divider

    def from_volts(self, v, temp=None):
        slope = (7.0 - 4.0) / (self.v7 - self.v4)
        if temp is not None:
            slope *= (self.cal_temp + 273.15) / (temp + 273.15)
        return 7.0 + (v - self.v7) * slope

    def read(self, temp=None):
        return self.from_volts(read_volts(self.adc, divider=self.divider), temp)

    def calibrate(self, point, temp=25.0):
        """Store the probe voltage in a pH 7 or pH 4 buffer (two-point calibration)."""
        v = read_volts(self.adc, samples=32, divider=self.divider)
        if point == 7:
            self.v7 = v
        elif point == 4:
            self.v4 = v
        else:
            raise ValueError("pH calibration point must be 7 or 4")
        self.cal_temp = temp
        return v


# TDS: DFRobot SEN0244 Gravity TDS wiki: coefficient = 1 + 0.02 * (T - 25);
# Vc = V / coefficient; TDS(ppm) = (133.42 Vc^3 - 255.86 Vc^2 + 857.39 Vc) * 0.5 * k,
# k from calibration in a reference solution (DFRobot_EC/TDS library "kValue").
# Conductivity follows the catalogue's TDS = 0.5 * EC (uS/cm).
TDS_FACTOR = 0.5


def tds_from_volts(v, temp=25.0, k=1.0):
    vc = v / (1.0 + 0.02 * (temp - 25.0))
    return (133.42 * vc * vc * vc - 255.86 * vc * vc + 857.39 * vc) * 0.5 * k


class TDS:
    def __init__(self, adc, k=1.0, divider=1.0):
        self.adc = adc
        self.k = k
        self.divider = divider

    def read(self, temp=25.0):
        tds = tds_from_volts(read_volts(self.adc, divider=self.divider), temp, self.k)
        return tds, tds / TDS_FACTOR


# Turbidity: DFRobot SEN0189 wiki: NTU = -1120.4 V^2 + 5742.3 V - 4352.9 for 2.5 V <= V <= 4.2 V
# (sensor output at 5 V supply; the ESP32 sees it through a divider). Clear water is ~4.2 V.
def ntu_from_volts(v):
    if v >= 4.2:
        return 0.0
    if v < 2.5:
        return 3000.0
    return max(0.0, -1120.4 * v * v + 5742.3 * v - 4352.9)


class Turbidity:
    def __init__(self, adc, divider=1.5, offset_v=0.0):
        self.adc = adc
        self.divider = divider
        self.offset_v = offset_v  # clear-water calibration: shifts the curve so 0 NTU reads 4.2 V

    def read(self):
        return ntu_from_volts(read_volts(self.adc, divider=self.divider) + self.offset_v)


# Dissolved oxygen: DFRobot SEN0237 wiki, single-point calibration in air-saturated water:
# Vsat(T) = Vcal + 35 mV/degC * (T - Tcal); DO = V * DO_sat(T) / Vsat(T).
# DO_sat: oxygen saturation in fresh water at 0..40 degC, ug/L (same table as the wiki,
# after the USGS/Benson-Krause solubility values, 8.25 mg/L at 25 degC).
DO_SAT = (14460, 14220, 13820, 13440, 13090, 12740, 12420, 12110, 11810, 11530, 11260,
          11010, 10770, 10530, 10300, 10080, 9860, 9660, 9460, 9270, 9080, 8900, 8730,
          8570, 8410, 8250, 8110, 7960, 7820, 7690, 7560, 7430, 7300, 7180, 7070, 6950,
          6840, 6730, 6630, 6530, 6410)


def do_from_volts(v, temp, cal_v=1.6, cal_t=25.0):
    t = int(temp + 0.5)
    t = 0 if t < 0 else (40 if t > 40 else t)
    vsat = cal_v + 0.035 * (temp - cal_t)
    if vsat <= 0:
        return None
    return v * DO_SAT[t] / vsat / 1000.0


class DissolvedOxygen:
    def __init__(self, adc, cal_v=1.6, cal_t=25.0):
        self.adc = adc
        self.cal_v = cal_v
        self.cal_t = cal_t

    def read(self, temp=25.0):
        return do_from_volts(read_volts(self.adc), temp, self.cal_v, self.cal_t)

    def calibrate(self, temp):
        self.cal_v = read_volts(self.adc, samples=32)
        self.cal_t = temp
        return self.cal_v


class Linear:
    """A linear 0..V analog transmitter (free-chlorine probe): value = (V - v0) * per_volt."""

    def __init__(self, adc, v0=0.0, per_volt=20.0 / 3.0, divider=1.0):
        self.adc = adc
        self.v0 = v0
        self.per_volt = per_volt
        self.divider = divider

    def read(self):
        return max(0.0, (read_volts(self.adc, divider=self.divider) - self.v0) * self.per_volt)


# Electrochemical gas cell with an Alphasense individual sensor board (working and
# auxiliary electrodes). Alphasense application note AAN 803-05, algorithm 1:
#   ppb = ((WE - WE0) - n * (AE - AE0)) / sensitivity[mV/ppb], n = 1 by default.
# ug/m3 = ppb * M / 24.45 at 25 degC and 1 atm: NO2 46.01 -> 1.88, O3 48.00 -> 1.96,
# CO 28.01 -> 1.145 (catalogue comments use the same factors).
UGM3_PER_PPB = {"no2": 1.88, "o3": 1.96, "co": 1.145}


class GasChannel:
    def __init__(self, we_adc, ae_adc, gas, we0_mv, ae0_mv, sens_mv_ppb, n=1.0):
        self.we = we_adc
        self.ae = ae_adc
        self.gas = gas
        self.we0 = we0_mv
        self.ae0 = ae0_mv
        self.sens = sens_mv_ppb
        self.n = n

    def ppb(self, we_mv, ae_mv):
        return ((we_mv - self.we0) - self.n * (ae_mv - self.ae0)) / self.sens

    def read_ppb(self, cross_mv=0.0):
        """ppb; cross_mv: the part of the corrected WE signal due to another gas (OX-B431: NO2)."""
        we = read_volts(self.we) * 1000
        ae = read_volts(self.ae) * 1000
        return self.ppb(we - cross_mv, ae)

    def ugm3_per_ppb(self):
        return UGM3_PER_PPB[self.gas]

    def read(self, cross_mv=0.0):
        return max(0.0, self.read_ppb(cross_mv) * UGM3_PER_PPB[self.gas])

    def calibrate_zero(self):
        """Zero air: remember both electrodes' offsets."""
        self.we0 = read_volts(self.we, samples=32) * 1000
        self.ae0 = read_volts(self.ae, samples=32) * 1000


class Battery:
    """Cell voltage through the board's divider (2:1 on most ESP32 battery boards)."""

    def __init__(self, adc, divider=2.0):
        self.adc = adc
        self.divider = divider

    def read(self):
        return read_volts(self.adc, samples=8, divider=self.divider)
