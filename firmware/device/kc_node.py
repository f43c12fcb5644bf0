# The node runtime shared by every kind: sample on schedule into the flash ring,
# forward oldest-first over MQTT QoS 1, keep the link up with backoff, apply remote
# config and commands, feed the watchdog, deep-sleep battery nodes between readings.
#
# Everything hardware-specific comes from `board` (kc_board on an ESP32, a fake under
# CPython or the MicroPython test runner), so this loop is the same code everywhere.
import json
import struct

import kc_config
import kc_led
import kc_payload
import kc_schema
import kc_sensors
import kc_wifi
from kc_backoff import Backoff
from kc_mqtt import MQTTClient, MQTTError
from kc_ring import Ring

# RTC memory (kept through deep sleep, lost on power-off): magic, seq, boots, next reading
# wall-clock (s), boot id (new at power-on), monotonic ms since power-on at the last sleep,
# last NTP sync wall-clock (s), consecutive failed link attempts, wakes since power-on, and
# whether the monotonic time was saved at a planned sleep/reset (1) or only at a reading (0),
# the Wi-Fi network that last worked (index, 255 none) and rounds of all networks failed
RTC_FMT = "<4sIIIIQIHHBBH"
RTC_MAGIC = b"KCN3"
SLEEP_FLUSH_BUDGET_MS = 20000  # a sleeping node gives up on the link after this and sleeps anyway
WIFI_TRY_MS = 10000  # kc_board's association wait: the budget grows by one per extra network
NTP_RESYNC_MS = 6 * 3600 * 1000  # the ESP32 RTC drifts seconds per day
NTP_RETRY_MS = 60000  # until the first sync: every connection, and at least once a minute
WIFI_RESET_AFTER = 5  # consecutive Wi-Fi failures before the radio is power-cycled
STABLE_MS = 600000  # this long up (or the first delivery) clears the crash counter of main.py
CRASH_FILE = "/crash.json"  # main.py writes it (storage dir relative); the birth message carries it
# readings taken before the clock is known: ts 0 plus this marker, stamped before sending
MONO_PREFIX = b'{"v":%d,"ts":0,"mono":'
LOW_BATTERY_V = 3.45  # Li-ion near empty under load; the radio would brown it out


class Node:
    def __init__(self, board, cfg):
        self.b = board
        self.cfg = cfg
        self.kind = cfg["kind"]
        self.device = cfg["device"]
        root, city = cfg["root"], cfg["city"]
        self.t_telemetry = kc_payload.topic(root, city, self.kind, self.device, "telemetry")
        self.t_status = kc_payload.topic(root, city, self.kind, self.device, "status")
        self.t_config = kc_payload.topic(root, city, self.kind, self.device, "config")
        self.t_cmd = kc_payload.topic(root, city, self.kind, self.device, "cmd")
        self.t_ack = kc_payload.topic(root, city, self.kind, self.device, "ack")
        self.fw = cfg.get("fw")
        # where /app.json and the update slots live: the flash root on a board, a directory elsewhere
        self.fs_root = getattr(board, "fs_root", "")
        self.ota = self._ota_state()
        self.battery_node = kc_schema.KINDS[self.kind][1]
        ds = cfg.get("deep_sleep")
        self.deep_sleep = self.battery_node if ds is None else bool(ds)
        self.dir = board.storage_dir()
        self.stats = {"readings": 0, "sent": 0, "delivered": 0, "no_clock": 0, "bad_fields": 0,
                      "link_errors": 0, "bad_config": 0, "bad_cmd": 0, "corrupt": 0}
        self.cal = dict(kc_sensors.CAL_DEFAULTS[self.kind])
        self.cal.update(cfg.get("calibration") or {})
        self.interval_s = cfg["interval_s"]
        self.thresholds = {}
        # the set-up AP opened by the node itself when its networks keep failing (kc_wifi.fallback_due)
        self.ap_rounds = cfg.get("ap_fallback_rounds")
        if self.ap_rounds is None:
            self.ap_rounds = kc_config.AP_FALLBACK_ROUNDS_SLEEP if self.deep_sleep else kc_config.AP_FALLBACK_ROUNDS
        self.ap_window_s = cfg.get("ap_fallback_s", kc_config.AP_FALLBACK_S)
        self.battery_v = None
        self.remote_path = self.dir + "/remote.json"
        remote = kc_config.load_json(self.remote_path)
        if remote is not None:
            try:
                self._apply_remote(kc_config.validate_remote(remote, self.kind, self.cal), persist=False)
            except kc_config.ConfigError as e:
                self.b.log("stored remote config ignored: %s" % e)
        rc = cfg["ring"]
        self.ring = Ring(self.dir + "/log", rc["capacity"], rc["slot"])
        next_wall = self._restore_rtc()
        self.boots += 1
        self.wakes += 1
        self.boot_ticks = board.ticks_ms()
        self.ntp_hosts = cfg.get("ntp_hosts") or [cfg["ntp_host"]]
        # several networks (installer's phone hotspot, the site's AP, ...): last good first,
        # then strongest first where the radio can scan (kc_wifi)
        self.wifi_list = cfg.get("wifi_networks") or [cfg["wifi"]]
        self.wifi = kc_wifi.Rotation(self.wifi_list, self.wifi_good, getattr(board, "wifi_scan", None))
        self.wifi.rounds_failed = self.wifi_rounds
        self.led = kc_led.Led(self._led_pin(), board.ticks_ms, board.ticks_diff)
        self.led.set("connecting")
        if hasattr(board, "on_wait"):
            board.on_wait = self.led.update  # kc_board's Wi-Fi association wait keeps blinking
        self.broker_error = False
        self.suite = kc_sensors.make(self.kind, board, self.cal)
        m = cfg["mqtt"]
        ssl_params = {}
        if m.get("tls_ca"):
            with open(m["tls_ca"], "rb") as f:  # the broker's CA certificate, DER
                ssl_params["cadata"] = f.read()
        self.client = MQTTClient(self.device, m["host"], m["port"], m.get("user"), m.get("password"),
                                 m.get("keepalive", 30), ssl=bool(m.get("tls")),
                                 ssl_params=ssl_params, socket_factory=board.socket_factory(),
                                 max_inflight=cfg.get("max_inflight", 16), idle=self._idle)
        self.client.on_puback = self._on_puback
        self.client.on_message = self._on_message
        self.pending = []  # [pid, ring id, acked] in send order
        self.send_next = self.ring.acked + 1
        self.incoming = []
        cap = cfg.get("backoff_cap_ms", kc_config.BACKOFF_CAP_MS)
        self.wifi_backoff = Backoff(500, cap)
        self.mqtt_backoff = Backoff(1000, cap)
        self.next_link_try = board.ticks_ms()
        # a sync this recent (RTC memory) and a running clock: no NTP round trip on this wake
        now_wall = board.now_ms()
        self.synced = bool(now_wall and self.sync_wall and 0 <= now_wall // 1000 - self.sync_wall < NTP_RESYNC_MS // 1000)
        self.last_sync = board.ticks_ms()
        self.last_ntp_try = board.ticks_add(board.ticks_ms(), -NTP_RETRY_MS)
        self.wifi_fails = 0
        self.uptime_ms = 0
        self.no_link_ms = 0
        self._tick = board.ticks_ms()
        self.stable = False
        self.low_battery = False
        # deep-sleep nodes that keep failing try the link only on every 2nd, 4th .. 16th wake
        self.link_this_wake = True
        if self.deep_sleep and self.fails >= 2:
            self.link_this_wake = self.wakes % min(1 << (self.fails - 1), 16) == 0
        self.wake_failed = False
        self.attempts = 0
        self.mono_base_boot = self.mono_base
        self.warm = True  # sensors are powered at boot
        self.reboot_at = None
        self.stop = False
        self.started = board.ticks_ms()
        # after deep sleep the reading is due at the wall-clock time saved before sleeping
        self.next_read = board.ticks_ms()
        if hasattr(self.suite, "first_reading_ms"):  # e.g. the PMS5003 fan must run 30 s first
            self.next_read = board.ticks_add(self.next_read, self.suite.first_reading_ms())
        now = board.now_ms()
        if next_wall and now:
            wait = next_wall * 1000 - now
            if 0 < wait < int(self.interval_s * 1000):
                self.next_read = board.ticks_add(board.ticks_ms(), wait)

    def _ota_state(self):
        """Whether an update was ever staged (then kc_ota is loaded, and fw is the running slot's)."""
        try:
            import os
            os.stat(self.fs_root + "/app.json")
        except OSError:
            return False
        import kc_ota
        st = kc_ota.boot(self.fs_root)
        if st and st.get("fw"):  # the version of what runs: a staged slot or image
            self.fw = st["fw"]
        return True

    # -- persistence of the sequence number -----------------------------------
    def _restore_rtc(self):
        raw = self.b.rtc_load()
        n = struct.calcsize(RTC_FMT)
        self.seq, self.boots, next_wall, self.boot_id, self.mono_base = 0, 0, 0, 0, 0
        self.sync_wall, self.fails, self.wakes = 0, 0, 0
        self.wifi_good, self.wifi_rounds = kc_wifi.NO_GOOD, 0
        clean = 0
        if raw and len(raw) >= n:
            f = struct.unpack(RTC_FMT, raw[:n])
            if f[0] == RTC_MAGIC:
                self.seq, self.boots, next_wall, self.boot_id, self.mono_base, self.sync_wall, self.fails, \
                    self.wakes, clean, self.wifi_good, self.wifi_rounds = f[1:]
        if not clean:
            # power-on, or a crash/watchdog reset: the time since the last save is unknown, so
            # readings of the old epoch can no longer be stamped exactly (they are given up, counted)
            self.boot_id, self.mono_base = 0, 0
        if not self.boot_id:  # a new monotonic epoch
            self.boot_id = self._new_boot_id()
        # RTC memory is lost on power-off; the flash log keeps the last seq
        self.seq = max(self.seq, self.ring.seq)
        return next_wall

    def _new_boot_id(self):
        try:
            import os
            bid = struct.unpack("<I", os.urandom(4))[0]
        except (ImportError, AttributeError, OSError):
            bid = self.b.ticks_ms() ^ (self.ring.last << 12)
        return (bid & 0x7FFFFFFF) or 1

    def mono_ms(self):
        """Milliseconds since power-on, across deep sleeps (RTC memory), immune to ticks wrap."""
        return self.mono_base_boot + self.uptime_ms + self.b.ticks_diff(self.b.ticks_ms(), self._tick)

    def _save_rtc(self, next_wall=0, slept_ms=0, clean=0):
        """clean=1 only right before a planned deep sleep or reset, when mono_ms() + slept_ms is
        exactly the monotonic time at the next boot (give or take the boot itself, ~1 s)."""
        self.b.rtc_save(struct.pack(RTC_FMT, RTC_MAGIC, self.seq, self.boots, next_wall, self.boot_id,
                                    self.mono_ms() + slept_ms, self.sync_wall, min(self.fails, 65535),
                                    self.wakes & 0xFFFF, clean, self.wifi.last_good,
                                    min(self.wifi.rounds_failed, 65535)))

    # -- sampling --------------------------------------------------------------
    def sample(self):
        now = self.b.now_ms()
        values = self.suite.read()
        bat = self.suite.battery()
        self.battery_v = bat
        lb = self.cfg.get("low_battery_v", LOW_BATTERY_V)
        if self.deep_sleep and bat is not None and bat < lb and not self.low_battery:
            self.low_battery = True
            self.stats["low_battery"] = self.stats.get("low_battery", 0) + 1
        rssi = self.b.rssi() if self.b.wifi_connected() else None
        seq = (self.seq + 1) % (kc_schema.SEQ_MAX + 1)
        payload, bad = kc_payload.telemetry(self.kind, now or 0, seq, values, battery=bat, fw=self.fw, rssi=rssi)
        self.stats["bad_fields"] += len(bad)
        if payload is None:
            return False
        if now is None:
            # no clock yet: keep the monotonic time and boot id, stamp when the clock is known
            # (pump); a reading is never sent with a guessed time
            self.stats["no_clock"] += 1
            head = MONO_PREFIX % kc_schema.VERSION
            payload = head + b'%d,"boot":%d,' % (self.mono_ms(), self.boot_id) + payload[len(head) - 7:]
        if len(payload) > self.ring.max_payload():
            self.stats["oversized"] = self.stats.get("oversized", 0) + 1
            return False
        self.seq = seq
        self.ring.push(payload, seq=seq)
        self._save_rtc()
        self.stats["readings"] += 1
        self.last_values = values
        return True

    def _excursion(self, values):
        for name, lohi in self.thresholds.items():
            v = values.get(name)
            if v is not None and not lohi[0] <= v <= lohi[1]:
                return True
        return False

    # -- link ------------------------------------------------------------------
    def _link_up(self):
        b = self.b
        now = b.ticks_ms()
        if b.ticks_diff(now, self.next_link_try) < 0:
            return False
        if not b.wifi_connected():
            w = self.wifi.next()
            b.wifi_connect(w["ssid"], w.get("password") or "")
            if not b.wifi_connected():
                # a deep-sleep wake tries every network of its round before it gives up
                round_over = not self.wifi.order
                self.wifi.failed()
                self.broker_error = False
                self.wifi_fails += 1
                self._link_failed("wifi", round_over)
                if round_over and kc_wifi.fallback_due(self.wifi.rounds_failed, self.ap_rounds):
                    self._setup_window()
                if self.wifi_fails % WIFI_RESET_AFTER == 0 and hasattr(b, "wifi_reset"):
                    b.log("wifi: %d failures, power-cycling the radio" % self.wifi_fails)
                    b.wifi_reset()
                self.next_link_try = b.ticks_add(now, self.wifi_backoff.next_ms())
                return False
        self.wifi_fails = 0
        self.wifi.rounds_failed = 0  # the credentials work: a broker outage is no reason for the set-up AP
        self.wifi_backoff.reset()
        self._time_sync(force=not self.synced)
        ts = b.now_ms() or 0
        self.client.set_last_will(self.t_status, kc_payload.status("offline", ts, self.fw, "lwt"), True, 1)
        try:
            self.client.connect(clean_session=False)
            self.client.publish(self.t_status, self._birth(ts), retain=True, qos=1)
            self.client.subscribe(self.t_config, 1)
            self.client.subscribe(self.t_cmd, 1)
            if self.ota:
                import kc_ota
                kc_ota.after_link(self)
        except Exception as e:  # noqa: BLE001  any failure of link-up is a counted retry, never a reset loop
            self.client.close()
            self.stats["link_errors"] += 1
            self.broker_error = True  # Wi-Fi is up: the broker, its address, TLS or the account
            self._link_failed("mqtt")
            self.next_link_try = b.ticks_add(now, self.mqtt_backoff.next_ms())
            b.log("mqtt connect failed: %r" % (e,))
            return False
        self.mqtt_backoff.reset()
        self.fails = 0
        self.broker_error = False
        if self.wifi.current is not None:
            known = self.wifi.last_good
            self.wifi.succeeded()  # remembered (RTC memory) and tried first next time
            if known != self.wifi.last_good:
                self._save_rtc()
        b.log("mqtt connected (session present: %s, buffered %d)" % (self.client.session_present, len(self.ring)))
        return True

    def _link_failed(self, what, round_over=True):
        self.fails += 1
        if self.deep_sleep and round_over:
            self.wake_failed = True  # sleep the full interval now; the next wake tries again
        self.stats[what + "_fails"] = self.stats.get(what + "_fails", 0) + 1

    def _setup_window(self):
        """The networks failed ap_fallback_rounds rounds in a row (a changed password, a new
        router): the set-up AP for ap_fallback_s, then the node again (kc_board: after a reset,
        so the page never shares the heap with the node). Not on a low battery: the AP draws
        ~100 mA for minutes."""
        b = self.b
        lb = self.cfg.get("low_battery_v", LOW_BATTERY_V)
        if self.low_battery or (self.battery_v is not None and self.battery_v < lb):
            self.stats["ap_low_battery"] = self.stats.get("ap_low_battery", 0) + 1
            return
        hook = getattr(b, "setup_window", None)
        if hook is None:
            return
        rounds = self.wifi.rounds_failed
        b.log("wifi: %d rounds failed, set-up AP for %d s" % (rounds, self.ap_window_s))
        self.ring.save_seq(self.seq)
        # not a clean save: the next boot cannot know how long the window lasted (a config saved
        # on the page ends it early), so unstamped readings are given up rather than misdated
        self._save_rtc()
        hook("no Wi-Fi for %d rounds" % rounds, int(self.ap_window_s * 1000))

    def _time_sync(self, force=False):
        """NTP over several servers: until the first sync on every connection and once a minute,
        then every NTP_RESYNC_MS. Returns whether the clock is synced."""
        b = self.b
        now = b.ticks_ms()
        if self.synced:
            if b.ticks_diff(now, self.last_sync) < NTP_RESYNC_MS:
                return True
        elif not force and b.ticks_diff(now, self.last_ntp_try) < NTP_RETRY_MS:
            return False
        self.last_ntp_try = now
        for host in self.ntp_hosts:
            b.wdt_feed()
            if b.ntp_sync(host):
                self.synced = True
                self.last_sync = now
                wall = b.now_ms()
                self.sync_wall = wall // 1000 if wall else 0
                self.stats["ntp_ok"] = self.stats.get("ntp_ok", 0) + 1
                return True
        self.stats["ntp_fail"] = self.stats.get("ntp_fail", 0) + 1
        return self.synced

    def _birth(self, ts):
        doc = json.loads(kc_payload.status("online", ts, self.fw))
        # beyond the contract's required keys (consumers ignore unknown ones): what the buffer lost,
        # why the board last reset and the last crash main.py recorded
        doc["buffered"] = len(self.ring)
        doc["dropped"] = self.ring.dropped
        doc["boots"] = self.boots
        doc["synced"] = self.synced
        cause = getattr(self.b, "reset_cause", None)
        if cause is not None:
            doc["reset_cause"] = cause()
        crash = kc_config.load_json(self.dir + CRASH_FILE)
        if isinstance(crash, dict):
            doc["crashes"] = crash.get("count", 0)
            doc["last_crash"] = str(crash.get("tb", ""))[-300:]
        return json.dumps(doc)

    def _mark_stable(self):
        """Up long enough or delivered: clear main.py's crash counter (keep the last traceback)."""
        self.stable = True
        path = self.dir + CRASH_FILE
        crash = kc_config.load_json(path)
        if isinstance(crash, dict) and crash.get("count"):
            crash["count"] = 0
            kc_config.save_json(path, crash)
        if self.ota:  # a freshly updated app slot has now proven itself: no rollback
            try:
                import kc_ota
                if kc_ota.confirm(self):
                    self.b.log("update marked good")
            except Exception as e:  # noqa: BLE001
                self.b.log("mark_good: %r" % (e,))

    def _on_puback(self, pid):
        for p in self.pending:
            if p[0] == pid:
                p[2] = True
                return

    def _on_message(self, topic, msg, retain):
        self.incoming.append((topic, bytes(msg)))

    def pump(self):
        """Publish buffered readings oldest-first while the in-flight window has room."""
        c = self.client
        while c.can_publish() and self.send_next <= self.ring.last:
            if self.send_next <= self.ring.acked:  # overwritten while offline
                self.send_next = self.ring.acked + 1
                continue
            rid = self.send_next
            data = self.ring.get(rid)
            if data is not None and data.startswith(MONO_PREFIX % kc_schema.VERSION):
                data = self._stamp(data)
                if data is False:
                    return  # clock still unknown: keep the reading (and everything after it) for later
            self.send_next += 1
            if data is None:
                self.stats["corrupt"] += 1
                self.pending.append([0, rid, True])
                continue
            pid = c.publish(self.t_telemetry, data, qos=1)
            self.pending.append([pid, rid, False])
            self.stats["sent"] += 1

    def _stamp(self, data):
        """The payload with its wall-clock ts; False if the clock is unknown yet; None (given up,
        counted) if it was taken in an earlier power-on whose monotonic time cannot be related."""
        now = self.b.now_ms()
        if now is None:
            return False
        head = MONO_PREFIX % kc_schema.VERSION
        i = data.find(b",", len(head))
        j = data.find(b",", i + 1)
        mono = int(data[len(head):i])
        boot = int(data[i + 8:j])
        if boot != self.boot_id:
            self.stats["unstampable"] = self.stats.get("unstampable", 0) + 1
            return None
        ts = now - (self.mono_ms() - mono)
        return b'{"v":%d,"ts":%d,' % (kc_schema.VERSION, ts) + data[j + 1:]

    def _settle(self):
        done = 0
        while self.pending and self.pending[0][2]:
            done = self.pending.pop(0)[1]
            self.stats["delivered"] += 1
        if done:
            self.ring.ack(done)
            if not self.stable:
                self._mark_stable()

    # -- config and commands ---------------------------------------------------
    def _apply_remote(self, conf, persist=True):
        if "interval_s" in conf:
            self.interval_s = conf["interval_s"]
        if "thresholds" in conf:
            self.thresholds = conf["thresholds"]
        if "calibration" in conf:
            self.cal.update(conf["calibration"])
        self.ap_rounds = conf.get("ap_fallback_rounds", self.ap_rounds)
        self.ap_window_s = conf.get("ap_fallback_s", self.ap_window_s)
        if persist:
            kc_config.save_json(self.remote_path, conf)

    def _ack(self, cid, ok, detail="", extra=None):
        try:
            self.client.publish(self.t_ack, kc_payload.ack(cid, ok, detail, extra), qos=1)
        except OSError:
            pass

    def _handle(self, topic, msg):
        try:
            doc = json.loads(msg)
        except ValueError:
            doc = None
        if topic == self.t_config:
            if not msg:
                return  # retained config cleared
            try:
                conf = kc_config.validate_remote(doc, self.kind, self.cal)
            except kc_config.ConfigError as e:
                self.stats["bad_config"] += 1
                self._ack("config", False, str(e))
                return
            if conf == kc_config.load_json(self.remote_path):
                return  # the retained copy re-delivered on reconnect
            self._apply_remote(conf)
            if "calibration" in conf:
                self.suite = kc_sensors.make(self.kind, self.b, self.cal)
            self._ack("config", True, "applied")
            return
        if topic != self.t_cmd:
            # e.g. a message queued in the persistent session under an older topic root
            self.stats["foreign"] = self.stats.get("foreign", 0) + 1
            return
        if not isinstance(doc, dict) or doc.get("v") != kc_schema.VERSION or not isinstance(doc.get("cmd"), str):
            self.stats["bad_cmd"] += 1
            self._ack(doc.get("id") if isinstance(doc, dict) else None, False, "malformed command")
            return
        cid, cmd, args = doc.get("id"), doc["cmd"], doc.get("args") or {}
        if cmd == "ping":
            self._ack(cid, True, "pong", self.health())
        elif cmd == "reboot":
            self._ack(cid, True, "rebooting")
            self.reboot_at = self.b.ticks_add(self.b.ticks_ms(), 1000)
        elif cmd == "calibrate":
            try:
                upd = self.suite.calibrate(args if isinstance(args, dict) else {})
            except Exception as e:
                self._ack(cid, False, "calibration failed: %s" % e)
                return
            self.cal.update(upd)
            remote = kc_config.load_json(self.remote_path, {}) or {}
            cal = remote.get("calibration", {})
            cal.update(upd)
            remote["calibration"] = cal
            kc_config.save_json(self.remote_path, remote)
            self._ack(cid, True, "calibrated", upd)
        elif cmd == "update":
            import kc_ota
            kc_ota.handle(self, cid, args)
            if self.reboot_at is None:  # refused (or already running): give their heap back, ~12 KB
                import sys
                for m in ("kc_ota", "kc_http", "kc_update", "kc_ecdsa"):
                    sys.modules.pop(m, None)
        else:
            self.stats["bad_cmd"] += 1
            self._ack(cid, False, "unknown command")

    def health(self):
        return {"uptime_s": self.uptime_ms // 1000, "seq": self.seq, "synced": self.synced,
                "buffered": len(self.ring), "dropped": self.ring.dropped, "boots": self.boots,
                "rssi": self.b.rssi() if self.b.wifi_connected() else None, "fw": self.fw,
                "interval_s": self.interval_s, "sensor_errors": self.suite.errors,
                "warming": getattr(self.suite, "warming", 0),
                "counters": self.stats, "mqtt": self.client.stats}

    # -- main loop -------------------------------------------------------------
    def idle(self):
        return len(self.ring) == 0 and not self.pending

    def step(self):
        b = self.b
        b.wdt_feed()
        now = b.ticks_ms()
        # uptime from per-step deltas: ticks_ms wraps (2**30 ms, 12.4 days, on the ESP32)
        d = b.ticks_diff(now, self._tick)
        self._tick = now
        self.uptime_ms += d
        if not self.client.connected():
            self.no_link_ms += d
        else:
            self.no_link_ms = 0
        if not self.stable and self.uptime_ms > STABLE_MS:
            self._mark_stable()
        warmup = self.suite.warmup_ms
        power_save = warmup and self.interval_s * 1000 > 4 * warmup
        if power_save and not self.warm and b.ticks_diff(now, b.ticks_add(self.next_read, -warmup)) >= 0:
            self.suite.wake()
            self.warm = True
        if b.ticks_diff(now, self.next_read) >= 0:
            self.attempts += 1
            took = self.sample()
            if power_save and took:
                self.suite.rest()
                self.warm = False
            iv = int(self.interval_s * 1000) if (took or self.deep_sleep) else 1000
            if took and self._excursion(self.last_values):
                iv = max(kc_config.MIN_INTERVAL_S * 1000, iv // 4)
            self.next_read = b.ticks_add(self.next_read if took else now, iv)
            if b.ticks_diff(now, self.next_read) > 0:  # we fell behind (long outage): no burst
                self.next_read = b.ticks_add(now, iv)
        if not self.client.connected() and self._may_link():
            self._link_up()
        self._led()
        if self.client.connected():
            self._time_sync()
        limit_h = self.cfg.get("reboot_no_link_h", 6)
        if not self.deep_sleep and limit_h and self.no_link_ms > limit_h * 3600000:
            # a wedged radio or lwIP stack: a reset is the one cure that always works
            b.log("no link for %d h: resetting" % limit_h)
            self._save_rtc(clean=1)
            b.reset()
        if self.client.connected():
            try:
                self.pump()
                self.client.poll(50)
                while self.incoming:
                    t, m = self.incoming.pop(0)
                    self._handle(t, m)
            except (OSError, MQTTError) as e:
                self.client.close()
                self.stats["link_errors"] += 1
                b.log("link lost: %r" % (e,))
                self.next_link_try = b.ticks_add(b.ticks_ms(), self.mqtt_backoff.next_ms())
            self._settle()
        else:
            b.sleep_ms(50)
        if self.reboot_at is not None and b.ticks_diff(b.ticks_ms(), self.reboot_at) >= 0:
            self.client.disconnect()
            self._save_rtc(clean=1)
            b.reset()

    def _led(self):
        """Installer's status LED (kc_led patterns): steady = broker link up, double flash =
        Wi-Fi up but the broker link failed, slow blink = looking for Wi-Fi / the broker."""
        if self.client.connected():
            self.led.set("connected")
        elif self.broker_error:
            self.led.set("error")
        else:
            self.led.set("connecting")

    def _led_pin(self):
        if hasattr(self.b, "led_pin"):
            return self.b.led_pin()
        if hasattr(self.b, "status_led"):
            return _LedCall(self.b.status_led)
        return None

    def _idle(self):
        """Called in every MQTT I/O slice: the watchdog and the LED pattern keep going."""
        self.b.wdt_feed()
        self.led.update()

    def _may_link(self):
        """Whether this wake may use Wi-Fi: not on a low battery (the radio's current spikes
        brown the cell out), and after repeated failures only on some wakes."""
        if not self.deep_sleep:
            return True
        if self.low_battery or not self.link_this_wake or self.wake_failed:
            return False
        return True

    def maybe_sleep(self):
        """Battery nodes: once flushed (or out of link budget, or the link failed this wake),
        sleep until the next reading."""
        if not self.deep_sleep:
            return False
        b = self.b
        # connected with nothing sendable left (what remains waits for a clock) counts as flushed
        flushed = self.client.connected() and (self.idle() or (self.b.now_ms() is None and not self.pending))
        gave_up = self.attempts and not self._may_link() and not self.client.connected()
        budget = SLEEP_FLUSH_BUDGET_MS + (len(self.wifi_list) - 1) * WIFI_TRY_MS  # a whole round per wake
        budget_over = b.ticks_diff(b.ticks_ms(), self.started) > budget
        if not (flushed or budget_over or gave_up):
            return False
        wait = b.ticks_diff(self.next_read, b.ticks_ms())
        if wait <= 0:
            return False
        now = b.now_ms()
        self._save_rtc((now + wait) // 1000 if now else 0, slept_ms=wait, clean=1)
        self.ring.save_seq(self.seq)
        # a clean DISCONNECT: sleeping is not dying, so no last-will "offline"
        self.client.disconnect()
        b.deepsleep(wait)
        return True

    def run(self, duration_ms=None, max_readings=None):
        b = self.b
        start = b.ticks_ms()
        while not self.stop:
            self.step()
            if max_readings is not None and self.stats["readings"] >= max_readings:
                self.next_read = b.ticks_add(b.ticks_ms(), 1 << 29)
                if self.idle():
                    break
            if duration_ms is not None and b.ticks_diff(b.ticks_ms(), start) >= duration_ms:
                break
            self.maybe_sleep()
        return self.stats

    def shutdown(self):
        if self.client.connected():
            try:
                ts = self.b.now_ms() or 0
                self.client.publish(self.t_status, kc_payload.status("offline", ts, self.fw, "shutdown"), True, 1)
                self.client.poll(200)
            except (OSError, MQTTError):
                pass
        self.client.disconnect()
        self.ring.close()


class _LedCall:
    """A board without led_pin() but with status_led(on): shaped like a Pin for kc_led."""

    def __init__(self, fn):
        self.fn = fn

    def value(self, v):
        self.fn(bool(v))
