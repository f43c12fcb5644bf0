# Telemetry, status and ack payloads of the wire contract (docs/wire-contract.md),
# built from the generated kc_schema so field names, ranges and resolutions are the
# catalogue's. Numbers are printed with the field's own number of decimals: the
# JSON is then identical on CPython (double) and the ESP32 port (single-precision
# float), and a value never carries more digits than the sensor resolves.
import json

import kc_schema


def topic(root, city, kind, device, channel):
    return kc_schema.TOPIC.format(root=root, city=city, kind=kind, device=device, channel=channel)


def _num(value, decimals):
    if decimals == 0:
        return str(int(round(value)))
    return ("%." + str(decimals) + "f") % value


def _finite(x):
    return x == x and x not in (float("inf"), float("-inf"))


def clean_fields(kind, values):
    """Keep the fields the gateway will accept; return (ordered [(name, text)], rejected names).

    A value outside the sensor's physical range or not finite is a sensor fault: it is
    left out (and counted by the caller) instead of making the whole message rejectable.
    """
    out = []
    bad = []
    for name, lo, hi, res, dec, _typ in kc_schema.KINDS[kind][2]:
        if name not in values:
            continue
        v = values[name]
        if v is None or isinstance(v, bool) or not _finite(v):
            bad.append(name)
            continue
        v = round(v / res) * res
        if v < lo or v > hi:
            bad.append(name)
            continue
        out.append((name, _num(v, dec)))
    return out, bad


def telemetry(kind, ts_ms, seq, values, battery=None, fw=None, rssi=None):
    """(payload bytes, rejected field names). payload is None if no field survived."""
    fields, bad = clean_fields(kind, values)
    if not fields:
        return None, bad
    parts = ['{"v":%d,"ts":%d,"seq":%d,"fields":{' % (kc_schema.VERSION, ts_ms, seq % (kc_schema.SEQ_MAX + 1))]
    parts.append(",".join('"%s":%s' % (n, t) for n, t in fields))
    parts.append("}")
    b = kc_schema.BATTERY
    if battery is not None and _finite(battery) and b[1] <= battery <= b[2]:
        parts.append(',"bat":' + _num(battery, b[4]))
    if fw is not None:
        parts.append(',"fw":' + json.dumps(str(fw)[:kc_schema.FW_MAX_LEN]))
    if rssi is not None and kc_schema.RSSI_MIN <= int(rssi) <= kc_schema.RSSI_MAX:
        parts.append(',"rssi":%d' % int(rssi))
    parts.append("}")
    return "".join(parts).encode(), bad


def status(state, ts_ms, fw=None, reason=None):
    doc = {"v": kc_schema.VERSION, "state": state, "ts": ts_ms}
    if fw is not None:
        doc["fw"] = fw
    if reason is not None:
        doc["reason"] = reason
    return json.dumps(doc).encode()


def ack(cmd_id, ok, detail="", extra=None):
    doc = {"v": kc_schema.VERSION, "id": cmd_id, "ok": ok, "detail": detail}
    if extra:
        doc["data"] = extra
    return json.dumps(doc).encode()
