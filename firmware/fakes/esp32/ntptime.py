# Stand-in for MicroPython's `ntptime`: the runner's clock is already right.
host = "pool.ntp.org"
CALLS = []


def settime():
    CALLS.append(host)
