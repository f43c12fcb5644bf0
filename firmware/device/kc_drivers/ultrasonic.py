# JSN-SR04T (waterproof) / HC-SR04 ultrasonic ranger, trigger/echo mode.
#
# JSN-SR04T-2.0/3.0 datasheet (mode 1, HC-SR04 compatible): a >= 10 us high pulse on TRIG
# starts a ping; ECHO goes high for the round-trip time; blind zone ~20-25 cm, range up
# to ~600 cm; leave >= 60 ms between pings so the previous echo has died out (HC-SR04
# datasheet "we suggest to use over 60ms measurement cycle").
# Speed of sound in air: c = 331.3 * sqrt(1 + T/273.15) m/s ~ 331.3 + 0.606 T (linearised
# ideal-gas law; 343.2 m/s at 20 degC). Distance = t * c / 2.
BLIND_CM = 20.0
MAX_CM = 600.0


def speed_of_sound(temp_c):
    return 331.3 + 0.606 * temp_c


def echo_to_cm(echo_us, temp_c):
    return echo_us * 1e-6 * speed_of_sound(temp_c) / 2 * 100


def median(vals):
    s = sorted(vals)
    n = len(s)
    if n == 0:
        return None
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def robust_distance(samples, min_valid=3, max_dev_frac=0.1):
    """Median after false-echo rejection, or None.

    Timeouts (<= 0) and readings inside the blind zone or beyond the range are dropped;
    then anything further than max_dev_frac from the median (a side-wall or lid echo,
    a cross-talk spike) is dropped and the median taken again.
    """
    ok = [d for d in samples if d is not None and BLIND_CM <= d <= MAX_CM]
    if len(ok) < min_valid:
        return None
    m = median(ok)
    core = [d for d in ok if abs(d - m) <= max_dev_frac * m]
    if len(core) < min_valid:
        return None
    return median(core)


def fill_percent(distance_cm, depth_cm, full_cm=BLIND_CM):
    """0 % when the echo comes from the bin floor (depth), 100 % at the sensor's blind zone."""
    span = depth_cm - full_cm
    if span <= 0:
        return None
    f = (depth_cm - distance_cm) / span * 100
    return 0.0 if f < 0 else (100.0 if f > 100 else f)


class Ultrasonic:
    def __init__(self, trig, echo, pulse_us, sleep_us, sleep_ms, n=7, timeout_us=40000):
        self.trig = trig
        self.echo = echo
        self.pulse_us = pulse_us  # machine.time_pulse_us(pin, level, timeout) -> us or < 0
        self.sleep_us = sleep_us
        self.sleep_ms = sleep_ms
        self.n = n
        self.timeout_us = timeout_us
        self.rejected = 0

    def ping(self, temp_c):
        self.trig.value(0)
        self.sleep_us(5)
        self.trig.value(1)
        self.sleep_us(15)
        self.trig.value(0)
        t = self.pulse_us(self.echo, 1, self.timeout_us)
        if t <= 0:
            return None
        return echo_to_cm(t, temp_c)

    def read(self, temp_c=25.0):
        samples = []
        for i in range(self.n):
            if i:
                self.sleep_ms(60)
            samples.append(self.ping(temp_c))
        d = robust_distance(samples)
        self.rejected += sum(1 for s in samples if s is None or not (BLIND_CM <= s <= MAX_CM))
        return d


class Tilt:
    """SW-520D ball tilt switch to GND with pull-up: closed (0) when upright."""

    def __init__(self, pin, samples=5, sleep_ms=None):
        self.pin = pin
        self.samples = samples
        self.sleep_ms = sleep_ms

    def read(self):
        # majority vote: the ball bounces when the lid is slammed
        opened = 0
        for _ in range(self.samples):
            opened += 1 if self.pin.value() else 0
            if self.sleep_ms:
                self.sleep_ms(2)
        return 1 if opened * 2 > self.samples else 0
