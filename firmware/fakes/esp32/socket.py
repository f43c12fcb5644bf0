# Stand-in for MicroPython's `socket` on the runner (the WebAssembly port has none):
# every connection talks to an in-memory MQTT broker (kc_fakes.FakeBrokerSocket).
import kc_fakes

SOCK_STREAM = 1
PUBLISHED = []


def getaddrinfo(host, port, af=0, socktype=0):
    return [(2, SOCK_STREAM, 0, "", (host, port))]


class socket(kc_fakes.FakeBrokerSocket):
    def __init__(self, *args):
        kc_fakes.FakeBrokerSocket.__init__(self)
        self.published = PUBLISHED

    def connect(self, addr):
        self.addr = addr
