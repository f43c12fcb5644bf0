# Device configuration: the local config.json written at deploy time (identity,
# Wi-Fi, broker, credentials) and the remote part received on the retained `config`
# topic (interval, thresholds, calibration), validated before it is applied and
# persisted so a reboot or deep sleep does not forget it.
import json

import kc_schema

MIN_INTERVAL_S = 5
MAX_INTERVAL_S = 86400
# The set-up AP a node with a valid config opens by itself when its networks keep failing
# (kc_node, kc_wifi.fallback_due): after this many failed rounds of all networks (0 = never;
# unset: 20 for an always-on node, ~8 min of a dead network, more than a router's reboot; 4 for a
# deep-sleep node, whose rounds come only on the wakes that use the radio, ~4 h at 15 min)...
AP_FALLBACK_ROUNDS = 20
AP_FALLBACK_ROUNDS_SLEEP = 4
MAX_AP_FALLBACK_ROUNDS = 1000
# ... for this long (s): enough for an installer on site to type a new password, short enough
# that a city Wi-Fi outage costs minutes of readings, not hours
AP_FALLBACK_S = 300
MIN_AP_FALLBACK_S, MAX_AP_FALLBACK_S = 60, 900
# Ceiling of the Wi-Fi and broker reconnect backoff (kc_backoff, full jitter). A minute spreads a
# city's reconnects after an outage; tests and bench rigs set a few seconds so that a node back
# from an outage is not left waiting up to a minute by one unlucky draw.
BACKOFF_CAP_MS = 60000
MIN_BACKOFF_CAP_MS, MAX_BACKOFF_CAP_MS = 1000, 3600000

DEFAULTS = {
    "root": "kc",
    "city": "depok",
    "mqtt": {"host": "127.0.0.1", "port": 1883, "user": None, "password": None, "tls": False,
             "keepalive": 30},
    "wifi": {"ssid": "", "password": ""},
    "ntp_host": "pool.ntp.org",
    "ring": {"capacity": 256, "slot": 512},
    "fw": "1.0.0",
    "deep_sleep": None,  # None: battery-powered kinds sleep, others do not
    "ap_fallback_rounds": None,  # None: by power mode (kc_node)
    "ap_fallback_s": AP_FALLBACK_S,
}


class ConfigError(ValueError):
    pass


def _merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and x not in (
        float("inf"), float("-inf"))


def _segment_ok(s, maxlen, lower=False):
    if not isinstance(s, str) or not s or len(s) > maxlen:
        return False
    for i, c in enumerate(s):
        alnum = ("a" <= c <= "z") or ("0" <= c <= "9") or (not lower and "A" <= c <= "Z")
        if not (alnum or (i > 0 and (c == "-" or (c == "_" and not lower)))):
            return False
    return not lower or ("a" <= s[0] <= "z")


def check_passphrase(pw, what="Wi-Fi password"):
    """A WPA2-PSK passphrase is 8..63 printable ASCII characters (IEEE 802.11i-2004 Annex H.4)."""
    if not isinstance(pw, str) or not 8 <= len(pw) <= 63 or any(not 32 <= ord(c) <= 126 for c in pw):
        raise ConfigError(what + " must be 8..63 ASCII characters")


def validate_device(doc):
    """The merged local config, or ConfigError naming the first problem."""
    if not isinstance(doc, dict):
        raise ConfigError("config.json must be an object")
    cfg = _merge(DEFAULTS, doc)
    if cfg.get("kind") not in kc_schema.KINDS:
        raise ConfigError("kind must be one of " + ", ".join(sorted(kc_schema.KINDS)))
    # same rules as kotacerdas.contract CITY_RE / DEVICE_RE: no wildcard can reach a topic
    if not _segment_ok(cfg.get("device"), kc_schema.DEVICE_MAX):
        raise ConfigError("device id must be [A-Za-z0-9][A-Za-z0-9_-]{0,63}")
    if not _segment_ok(cfg["city"], kc_schema.CITY_MAX, lower=True):
        raise ConfigError("city must be [a-z][a-z0-9-]{0,31}")
    if not _segment_ok(cfg["root"], 32):
        raise ConfigError("root must be [A-Za-z0-9][A-Za-z0-9_-]{0,31}")
    port = cfg["mqtt"]["port"]
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError("mqtt.port must be 1..65535")
    cap = cfg.get("backoff_cap_ms", BACKOFF_CAP_MS)
    if not _is_int(cap) or not MIN_BACKOFF_CAP_MS <= cap <= MAX_BACKOFF_CAP_MS:
        raise ConfigError("backoff_cap_ms must be an integer %d..%d" % (MIN_BACKOFF_CAP_MS, MAX_BACKOFF_CAP_MS))
    _check_ap_fallback(doc)  # what config.json says (the merged defaults leave the rounds to kc_node)
    if cfg.get("ap_password") is not None:
        check_passphrase(cfg["ap_password"], "ap_password")
    if cfg.get("ads1115") is not None and cfg["kind"] != "water":
        raise ConfigError("ads1115 is a front end for the water probes only")
    _check_ads1115(cfg.get("ads1115"))
    if "interval_s" not in cfg:
        cfg["interval_s"] = kc_schema.KINDS[cfg["kind"]][0]
    return cfg


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _check_ap_fallback(doc):
    if "ap_fallback_rounds" in doc:
        n = doc["ap_fallback_rounds"]
        if not _is_int(n) or not 0 <= n <= MAX_AP_FALLBACK_ROUNDS:
            raise ConfigError("ap_fallback_rounds must be an integer 0..%d (0: never)" % MAX_AP_FALLBACK_ROUNDS)
    if "ap_fallback_s" in doc:
        w = doc["ap_fallback_s"]
        if not _is_int(w) or not MIN_AP_FALLBACK_S <= w <= MAX_AP_FALLBACK_S:
            raise ConfigError("ap_fallback_s must be an integer %d..%d" % (MIN_AP_FALLBACK_S, MAX_AP_FALLBACK_S))


def _check_ads1115(ads):
    """{"addr": 72, "fsr": 4.096, "sps": 128, "channels": {"ph": 0, "tds": 1, "turbidity": 2}}"""
    if ads is None:
        return
    if not isinstance(ads, dict) or not isinstance(ads.get("channels"), dict):
        raise ConfigError("ads1115 must be an object with channels {probe: 0..3}")
    from kc_drivers import ads1115
    try:
        for probe, ch in ads["channels"].items():
            if probe not in ("ph", "tds", "turbidity", "do", "chlorine"):
                raise ValueError("no probe %s" % str(probe)[:16])
            ads1115.config_word(ch, ads.get("fsr", 4.096), ads.get("sps", 128))
    except (ValueError, TypeError) as e:
        raise ConfigError("ads1115: %s" % e) from None
    if ads.get("addr", ads1115.ADDR) not in (0x48, 0x49, 0x4A, 0x4B):
        raise ConfigError("ads1115.addr must be 72..75 (0x48..0x4B)")


def validate_remote(doc, kind, cal_keys):
    """Check a message from the `config` topic; return the normalised dict or raise ConfigError.

    {"v":1, "interval_s":60, "thresholds":{"pm25":[0,150]}, "calibration":{"ph_v7":1.51},
     "ap_fallback_rounds":10, "ap_fallback_s":300}
    Every key is optional except v; unknown keys are refused so a typo is not silently ignored.
    """
    if not isinstance(doc, dict):
        raise ConfigError("config must be a JSON object")
    if doc.get("v") != kc_schema.VERSION:
        raise ConfigError("unsupported config version")
    out = {}
    for key in doc:
        if key not in ("v", "interval_s", "thresholds", "calibration", "ap_fallback_rounds", "ap_fallback_s"):
            raise ConfigError("unknown config key " + str(key)[:32])
    if "interval_s" in doc:
        iv = doc["interval_s"]
        if not _is_num(iv) or not MIN_INTERVAL_S <= iv <= MAX_INTERVAL_S:
            raise ConfigError("interval_s must be %d..%d" % (MIN_INTERVAL_S, MAX_INTERVAL_S))
        out["interval_s"] = iv
    if "thresholds" in doc:
        th = doc["thresholds"]
        if not isinstance(th, dict):
            raise ConfigError("thresholds must be an object")
        fields = {}
        for f in kc_schema.KINDS[kind][2]:
            fields[f[0]] = f
        clean = {}
        for name, pair in th.items():
            if name not in fields:
                raise ConfigError("threshold for unknown field " + str(name)[:32])
            if not isinstance(pair, list) or len(pair) != 2 or not (_is_num(pair[0]) and _is_num(pair[1])):
                raise ConfigError("threshold %s must be [lo, hi]" % name)
            if pair[0] > pair[1]:
                raise ConfigError("threshold %s: lo > hi" % name)
            clean[name] = [float(pair[0]), float(pair[1])]
        out["thresholds"] = clean
    if "calibration" in doc:
        cal = doc["calibration"]
        if not isinstance(cal, dict):
            raise ConfigError("calibration must be an object")
        for k, v in cal.items():
            if k not in cal_keys:
                raise ConfigError("unknown calibration constant " + str(k)[:32])
            if not _is_num(v):
                raise ConfigError("calibration %s must be a finite number" % k)
        out["calibration"] = dict(cal)
    _check_ap_fallback(doc)
    for key in ("ap_fallback_rounds", "ap_fallback_s"):
        if key in doc:
            out[key] = doc[key]
    return out


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def save_json(path, doc):
    """Write via a temporary file and rename, so a reset mid-write keeps the old copy."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(doc))
    try:
        import os
        os.rename(tmp, path)
    except OSError:
        import os
        os.remove(path)
        os.rename(tmp, path)
