# Exponential backoff with "full jitter" (AWS Architecture Blog, "Exponential Backoff
# And Jitter", 2015): delay = random(0, min(cap, base * 2^attempt)). A city's worth of
# nodes that lost the same access point then do not all reconnect in the same second.
# The platform's services use kotacerdas/backoff.py; this is a separate copy because the
# device runs MicroPython and cannot import kotacerdas. It differs on purpose: integer ms
# (no float on some ports) and a floor of base/2, so a node never reconnects with no pause.


class Backoff:
    def __init__(self, base_ms=500, cap_ms=60000, rand=None):
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.attempt = 0
        self.rand = rand  # rand(n) -> int in [0, n); injected so tests are deterministic
        if rand is None:
            try:
                import random
                self.rand = lambda n: random.getrandbits(30) % n
            except ImportError:
                self.rand = lambda n: n // 2

    def next_ms(self):
        ceiling = min(self.cap_ms, self.base_ms << min(self.attempt, 20))
        self.attempt += 1
        return self.base_ms // 2 + self.rand(max(1, ceiling - self.base_ms // 2))

    def reset(self):
        self.attempt = 0
