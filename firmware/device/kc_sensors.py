# Per-kind sensor suites: build drivers from the board's buses and turn one sampling
# pass into a {catalogue field: value} dict (kc_payload checks ranges/resolution).
# A driver that fails leaves its fields out of the reading and is counted; the
# others still report (docs/wire-contract.md: "a failed sensor is simply absent").
# Drivers are imported inside each suite: a board only loads (and the bundle for a kind
# only ships) the drivers its kind uses.

MAINS_V = 5.0  # catalogue common.battery: "5 V USB-powered nodes report 5.0"

# Calibration constants per kind (settable over the retained config topic and persisted).
CAL_DEFAULTS = {
    "water": {"ph_v7": 1.500, "ph_v4": 2.032, "ph_cal_temp": 25.0, "tds_k": 1.0, "turb_offset_v": 0.0,
              "do_cal_v": 1.6, "do_cal_t": 25.0, "cl_v0": 0.0, "cl_per_volt": 6.6667},
    "waste_bin": {"depth_cm": 120.0, "full_cm": 25.0},
    "air": {"no2_we0": 225.0, "no2_ae0": 230.0, "no2_sens": 0.212, "o3_we0": 230.0, "o3_ae0": 235.0,
            "o3_sens": 0.300, "co_we0": 300.0, "co_ae0": 290.0, "co_sens": 0.420,
            # OX-B431 response to NO2 (mV/ppb, from the sensor's own calibration certificate;
            # default: about its O3 sensitivity), PMS5003 hygroscopic kappa (0 = no correction),
            # electrochemical cells' settling after power-on (s; a design default: use the
            # stabilisation time on the ISB datasheet of the board in hand)
            "o3_no2_sens": 0.300, "pm_kappa": 0.2, "gas_warmup_s": 600.0},
}


class Suite:
    # how long before a reading the sensors must be woken (0: always on)
    warmup_ms = 0

    def __init__(self, board, cal):
        self.board = board
        self.cal = cal
        self.errors = {}

    def wake(self):
        pass

    def rest(self):
        pass

    def _try(self, name, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # one broken sensor must not stop the node
            self.errors[name] = self.errors.get(name, 0) + 1
            self.board.log("sensor %s: %r" % (name, e))
            return None

    def battery(self):
        adc = self.board.battery_adc()
        if adc is None:
            # mains/USB-powered station without a cell: the catalogue's convention is 5.0 V
            return MAINS_V
        from kc_drivers import analog
        return self._try("battery", analog.Battery(adc).read)


class WaterSuite(Suite):
    def __init__(self, board, cal):
        Suite.__init__(self, board, cal)
        from kc_drivers import analog, ds18b20
        b = board
        self.temp = ds18b20.DS18B20(b.onewire(), sleep_ms=b.sleep_ms)
        self.ph = analog.PH(b.adc("ph"), cal["ph_v7"], cal["ph_v4"], cal["ph_cal_temp"])
        self.tds = analog.TDS(b.adc("tds"), cal["tds_k"])
        self.turb = analog.Turbidity(b.adc("turbidity"), offset_v=cal["turb_offset_v"])
        self.do = analog.DissolvedOxygen(b.adc("do"), cal["do_cal_v"], cal["do_cal_t"])
        self.cl = analog.Linear(b.adc("chlorine"), cal["cl_v0"], cal["cl_per_volt"])

    def read(self):
        out = {}
        t = self._try("ds18b20", self.temp.read)
        if t is not None:
            out["temperature"] = t
        tc = 25.0 if t is None else t  # compensate at 25 degC when the probe is out
        v = self._try("ph", self.ph.read, tc)
        if v is not None:
            out["ph"] = v
        r = self._try("tds", self.tds.read, tc)
        if r is not None:
            out["tds"], out["conductivity"] = r
        v = self._try("turbidity", self.turb.read)
        if v is not None:
            out["turbidity"] = v
        v = self._try("do", self.do.read, tc)
        if v is not None:
            out["dissolved_oxygen"] = v
        v = self._try("chlorine", self.cl.read)
        if v is not None:
            out["chlorine"] = v
        return out

    def calibrate(self, args):
        what = args.get("sensor")
        if what == "ph":
            v = self.ph.calibrate(int(args.get("point", 7)), float(args.get("temp", 25.0)))
            key = "ph_v7" if int(args.get("point", 7)) == 7 else "ph_v4"
            return {key: v, "ph_cal_temp": self.ph.cal_temp}
        if what == "do":
            t = self.temp.read() or 25.0
            return {"do_cal_v": self.do.calibrate(t), "do_cal_t": t}
        raise ValueError("water calibrate: sensor must be ph or do")


class WasteSuite(Suite):
    def __init__(self, board, cal):
        Suite.__init__(self, board, cal)
        from kc_drivers import ultrasonic
        self.ultrasonic = ultrasonic
        b = board
        trig, echo = b.ultrasonic_pins()
        self.us = ultrasonic.Ultrasonic(trig, echo, b.time_pulse_us, b.sleep_us, b.sleep_ms)
        self.tilt = ultrasonic.Tilt(b.tilt_pin(), sleep_ms=b.sleep_ms)
        self.ntc = b.board_temperature

    def read(self):
        out = {}
        t = self._try("ntc", self.ntc)
        if t is not None:
            out["temperature"] = t
        d = self._try("ultrasonic", self.us.read, 25.0 if t is None else t)
        if d is not None:
            out["distance"] = d
            f = self.ultrasonic.fill_percent(d, self.cal["depth_cm"], self.cal["full_cm"])
            if f is not None:
                out["fill"] = f
        tilt = self._try("tilt", self.tilt.read)
        if tilt is not None:
            out["tilt"] = tilt
        return out

    def calibrate(self, args):
        # "empty bin" calibration: the current echo is the floor
        d = self.us.read(self.ntc())
        if d is None:
            raise ValueError("no valid echo")
        return {"depth_cm": d}


class AirSuite(Suite):
    # PMS5003 manual: stable data at least 30 s after wake-up; its fan and laser wear out
    # (and draw ~100 mA), so between widely spaced readings it sleeps
    warmup_ms = 30000

    def wake(self):
        self._try("pms5003", self.pms.wake)
        self.pms_on = self.board.ticks_ms()
        self.ready["pm"] = False

    def rest(self):
        self._try("pms5003", self.pms.sleep)

    def __init__(self, board, cal):
        Suite.__init__(self, board, cal)
        from kc_drivers import analog, bme280, mhz19b, pms5003
        b = board
        self.pms = pms5003.PMS5003(b.uart("pms"), sleep_ms=b.sleep_ms)
        self.co2 = mhz19b.MHZ19B(b.uart("co2"))
        self.bme = self._try("bme280", bme280.BME280, b.i2c(), bme280.ADDR, b.sleep_ms)
        self.pms5003 = pms5003
        self.gas = {}
        for g in ("no2", "o3", "co"):
            self.gas[g] = analog.GasChannel(b.adc(g + "_we"), b.adc(g + "_ae"), g, cal[g + "_we0"],
                                            cal[g + "_ae0"], cal[g + "_sens"])
        # warm-up from power-on (the node is built at boot, when the sensors get power):
        # fields are left out until their sensor is ready; a latch, so ticks_ms wrap cannot undo it
        self.on = self.pms_on = b.ticks_ms()
        scale = getattr(b, "warmup_scale", 1.0)  # the fakes' sensors are stable at once (0)
        self.wait_ms = {"pm": pms5003.WARMUP_MS * scale, "co2": mhz19b.PREHEAT_MS * scale,
                        "gas": cal["gas_warmup_s"] * 1000 * scale}
        self.ready = {"pm": False, "co2": False, "gas": False}
        self.warming = 0  # fields left out while their sensor warmed up or in fog

    def _ready(self, what, since):
        if not self.ready[what] and self.board.ticks_diff(self.board.ticks_ms(), since) >= self.wait_ms[what]:
            self.ready[what] = True
        if not self.ready[what]:
            self.warming += 1
        return self.ready[what]

    def first_reading_ms(self):
        """Delay of the first reading after boot: the PMS5003 must have run 30 s."""
        return int(self.wait_ms["pm"])

    def read(self):
        out = {}
        if self.bme is not None:
            r = self._try("bme280", self.bme.read)
            if r is not None:
                out.update(r)
        pm = self._try("pms5003", self.pms.read)
        if pm is not None and self._ready("pm", self.pms_on):
            rh = out.get("humidity")
            k = self.cal.get("pm_kappa", 0.2)
            p25 = self.pms5003.humidity_correct(pm["pm25"], rh, k)
            p10 = self.pms5003.humidity_correct(pm["pm10"], rh, k)
            if p25 is None:
                self.warming += 1  # fog: the optical reading is not a dry PM mass
            else:
                out["pm25"] = p25
                out["pm10"] = p10
        co2 = self._try("mhz19b", self.co2.read)
        if co2 is not None and self._ready("co2", self.on):
            out["co2"] = co2
        if self._ready("gas", self.on):
            no2_ppb = self._try("no2", self.gas["no2"].read_ppb)
            if no2_ppb is not None:
                out["no2"] = max(0.0, no2_ppb * self.gas["no2"].ugm3_per_ppb())
            # the OX-B431 "O3" cell answers NO2 too: take the paired NO2-B43F's share out
            # (Alphasense OX-B431 datasheet; "Efficacy of Paired Electrochemical Sensors for
            # Measuring Ozone Concentrations", 2018: OX-B431 + NO2-B43F pairs, linear responses)
            cross = (no2_ppb or 0.0) * self.cal.get("o3_no2_sens", 0.0)
            for g in ("o3", "co"):
                v = self._try(g, self.gas[g].read, cross if g == "o3" else 0.0)
                if v is not None:
                    out[g] = v
        return out

    def calibrate(self, args):
        what = args.get("sensor", "co2")
        if what == "co2":
            self.co2.calibrate_zero()
            return {}
        if what in self.gas:
            ch = self.gas[what]
            ch.calibrate_zero()
            return {what + "_we0": ch.we0, what + "_ae0": ch.ae0}
        raise ValueError("air calibrate: sensor must be co2, no2, o3 or co")


SUITES = {"water": WaterSuite, "waste_bin": WasteSuite, "air": AirSuite}


def make(kind, board, cal):
    return SUITES[kind](board, cal)
