# The installer's status LED: one blink pattern per state, so a person at the pole can tell
# without a laptop whether the node waits for provisioning, looks for Wi-Fi, has a broker
# link or has a problem. Non-blocking: update() sets the pin from the time since the pattern
# began and is called from every wait (node step, MQTT I/O slices, Wi-Fi association).
# A pattern is (on ms, off ms, ...) repeated; (1, 0) is steady on, (0, 1) off.
PATTERNS = {
    "provision": (100, 100),             # fast 5 Hz: access point / Improv, waiting for settings
    "connecting": (500, 500),            # slow 1 Hz: associating with Wi-Fi / reaching the broker
    "connected": (1, 0),                 # steady: broker link up
    "error": (150, 150, 150, 1050),      # double flash: Wi-Fi up but the broker refuses/fails
    "off": (0, 1),
}


class Led:
    def __init__(self, pin, ticks_ms, ticks_diff, active_low=False):
        self.pin = pin
        self.ticks_ms = ticks_ms
        self.ticks_diff = ticks_diff
        self.active_low = active_low
        self.mode = None
        self.t0 = 0
        self.lit = None
        self.period = 1

    def set(self, mode):
        if mode != self.mode:
            self.mode = mode
            self.t0 = self.ticks_ms()
            self.period = sum(PATTERNS[mode]) or 1
            self.lit = None
        self.update()

    def level_at(self, ms):
        """Whether the LED is lit `ms` after the current pattern began."""
        p = PATTERNS[self.mode or "off"]
        t = ms % self.period
        for i in range(len(p)):
            if t < p[i]:
                return i % 2 == 0
            t -= p[i]
        return False

    def update(self):
        if self.mode is None or self.pin is None:
            return
        lit = self.level_at(self.ticks_diff(self.ticks_ms(), self.t0))
        if lit != self.lit:
            self.lit = lit
            try:
                self.pin.value(1 if lit != self.active_low else 0)
            except (OSError, ValueError):  # no LED on this pin: nothing to show
                self.pin = None
