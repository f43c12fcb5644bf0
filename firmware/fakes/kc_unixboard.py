# The board for MicroPython's unix port: real time, real sockets (kc_mqtt opens them, with
# mbedTLS for TLS), storage on any path (a LittleFS mount of kc_flash.CountingFlash in the
# erase-budget tests); sensors, Wi-Fi, NTP and RTC memory are the protocol fakes of kc_fakes.
import time

import kc_fakes


class UnixBoard(kc_fakes.FakeBoard):
    def __init__(self, kind, storage, seed=1, battery_v=None):
        t0 = time.time()
        kc_fakes.FakeBoard.__init__(self, kind, lambda: time.time() - t0, seed, battery_v)
        self.storage = storage
        self.wifi_up = True
        self.ntp_ok = True
        self.ntp_calls = []

    # the port's own wrapping tick counter, as on a board
    ticks_ms = staticmethod(time.ticks_ms)
    ticks_diff = staticmethod(time.ticks_diff)
    ticks_add = staticmethod(time.ticks_add)
    sleep_ms = staticmethod(time.sleep_ms)

    def now_ms(self):
        return time.time_ns() // 1000000  # the unix port counts from 1970 like the wire contract

    def log(self, msg):
        self.logs.append(msg)
        print("node:", msg)

    def wifi_connect(self, ssid, password):
        pass

    def wifi_connected(self):
        return self.wifi_up

    def rssi(self):
        return -60

    def ntp_sync(self, host):
        self.ntp_calls.append(host)
        return self.ntp_ok

    def socket_factory(self):
        return None  # kc_mqtt opens the socket and wraps TLS itself, exactly as on a board

    def storage_dir(self):
        return self.storage

    def deepsleep(self, ms):
        raise kc_fakes.DeepSleep(ms)

    def reset(self):
        raise kc_fakes.Reset()
