import base64
import json
from collections import defaultdict

from kotacerdas.contract import Reason, Rejection

from simulators.engine import BAD, GOOD, LWT, STATUS, Run
from simulators.faults import MALFORMED_VARIANTS
from simulators.fleet import device_records
from simulators.publisher import dry_run_line

from .helpers import NOW_MS, device_of, messages, small_scenario, validate

VALUE_TYPES = {"spike", "flatline", "drift", "offset", "pollution_episode", "contamination"}


def test_same_seed_same_stream_other_seed_other_stream():
    sc = small_scenario()
    _, a = messages(sc, births=True)
    _, b = messages(sc, births=True)
    assert [(m.t, m.topic, m.payload) for m in a] == [(m.t, m.topic, m.payload) for m in b]
    _, c = messages(sc.with_seed(8))
    assert [m.payload for m in c if m.cls == GOOD][:50] != [m.payload for m in a if m.cls == GOOD][:50]
    assert Run(sc, "kc", NOW_MS).labels == Run(sc, "kc", NOW_MS).labels


def test_stream_is_in_publish_order_and_never_in_the_future():
    run, msgs = messages(small_scenario(), births=True)
    ts = [m.t for m in msgs]
    assert ts == sorted(ts)
    for m in msgs:
        if m.cls == GOOD:
            stamp = json.loads(m.payload)["ts"]
            assert run.start_ms - 300_000 <= stamp <= NOW_MS + 300_000


def test_good_messages_pass_the_contract_and_bad_ones_get_the_expected_reason():
    sc = small_scenario()
    _, msgs = messages(sc)
    known = {r["device"] for r in device_records(sc)}
    seen_payloads: set[bytes] = set()
    reasons = defaultdict(int)
    n_good = 0
    for m in msgs:
        r = validate(m)
        if m.cls == GOOD:
            assert not isinstance(r, Rejection), (r, m.payload)
            assert device_of(m.topic) in known
            seen_payloads.add(m.payload)
            n_good += 1
        elif m.cls == BAD:
            reasons[m.reason] += 1
            if m.reason == Reason.DUPLICATE:
                # the gateway refuses it by (device, seq, ts): an exact copy of an earlier good message
                assert not isinstance(r, Rejection) and m.payload in seen_payloads
            elif m.reason == Reason.UNKNOWN_DEVICE:
                assert not isinstance(r, Rejection) and device_of(m.topic) not in known
            else:
                assert isinstance(r, Rejection) and r.reason == m.reason, (m.bad_type, m.reason, r, m.payload)
    assert n_good > 500
    assert reasons[Reason.OUT_OF_RANGE] == 3 and reasons[Reason.UNKNOWN_DEVICE] == 2 and reasons[Reason.DUPLICATE] == 2
    # 8 malformed events cycle through every malformed variant
    assert {reason for _, reason in MALFORMED_VARIANTS} <= set(reasons)


def _by_seq(msgs):
    out = {}
    for m in msgs:
        if m.cls == GOOD:
            d = json.loads(m.payload)
            out[(device_of(m.topic), d["seq"])] = (m, d)
    return out


def test_value_faults_change_only_labelled_cells():
    sc = small_scenario()
    run, faulty = messages(sc)
    _, clean = messages(small_scenario(faults={}))
    labels = [lb for lb in run.labels if lb.type in VALUE_TYPES]
    assert labels
    a, b = _by_seq(faulty), _by_seq(clean)
    hit = defaultdict(int)
    for key, (_m, d) in a.items():
        ref = b[key][1]
        for fname, v in d["fields"].items():
            if v != ref["fields"][fname]:
                ts = ref["ts"]
                cover = [lb for lb in labels if lb.device == key[0] and lb.field == fname and lb.start <= ts <= lb.end]
                assert cover, f"unlabelled change {key} {fname}: {ref['fields'][fname]} -> {v}"
                for lb in cover:
                    hit[(lb.device, lb.field, lb.start, lb.type)] += 1
    for t in ("spike", "offset", "drift", "contamination", "pollution_episode"):
        assert any(k[3] == t for k in hit), f"no visible {t}"
    for lb in labels:
        if lb.type in ("spike", "offset", "contamination"):
            assert hit[(lb.device, lb.field, lb.start, lb.type)] > 0, lb
    # the labels file says which faults showed: trace is True exactly where a sent reading changed
    seen = [lb for lb in run.labels_seen() if lb.type in VALUE_TYPES and lb.field]
    assert [(lb.device, lb.field, lb.start) for lb in seen] == [(lb.device, lb.field, lb.start) for lb in labels
                                                                  if lb.field]
    for lb in seen:
        assert lb.trace == (hit[(lb.device, lb.field, lb.start, lb.type)] > 0), lb
    assert all(lb.trace for lb in run.labels_seen() if lb.type not in VALUE_TYPES)


def test_a_fault_that_changes_nothing_is_labelled_without_trace():
    # what a step pinned at a range floor already read (turbidity 0 NTU in clear water) looks like: the
    # readings are what they would have been, so the label says no trace; a step that moves them shows
    sc = small_scenario()
    run = Run(sc, "kc", NOW_MS)
    f = next(f for f in run.plan.faults if f.type == "offset")
    kind = run.cat[f.kind]
    f.params["delta"] = -10 * (kind.field(f.field).hi - kind.field(f.field).lo)
    list(run.messages())
    lb = next(lb for lb in run.labels_seen() if lb.start == f.start and lb.type == "offset")
    assert lb.trace  # pinned at the floor: that shows
    run = Run(sc, "kc", NOW_MS)
    f = next(f for f in run.plan.faults if f.type == "offset")
    f.params["delta"] = 0.0
    list(run.messages())
    lb = next(lb for lb in run.labels_seen() if lb.start == f.start and lb.type == "offset")
    assert not lb.trace


def test_flatline_holds_one_value_over_its_window():
    run, msgs = messages(small_scenario())
    for lb in (x for x in run.labels if x.type == "flatline"):
        vals = {json.loads(m.payload)["fields"][lb.field] for m in msgs if m.cls == GOOD and device_of(m.topic) == lb.device
                and lb.start <= json.loads(m.payload)["ts"] <= lb.end}
        assert len(vals) == 1, (lb, vals)


def test_message_faults_match_their_labels():
    run, msgs = messages(small_scenario())
    labels = run.labels
    good = [(device_of(m.topic), json.loads(m.payload), m) for m in msgs if m.cls == GOOD]
    for lb in labels:
        mine = [(d, m) for dev, d, m in good if dev == lb.device]
        if lb.type in ("dropout", "offline"):
            assert mine and not [d for d, _ in mine if lb.start <= d["ts"] <= lb.end], lb
            assert [d for d, _ in mine if d["ts"] < lb.start] or [d for d, _ in mine if d["ts"] > lb.end]
        elif lb.type == "clock_skew":
            inside = [(d, m) for d, m in mine if lb.start <= m.t <= lb.end]
            assert inside and all(d["ts"] != m.t for d, m in inside)
            assert len({d["ts"] - m.t for d, m in inside}) == 1
        elif lb.type == "out_of_order":
            order = [d["ts"] for d, _ in mine]
            i = order.index(lb.start)
            assert i > 0 and order[i - 1] > lb.start  # published after a later reading
    bad = [m for m in msgs if m.cls == BAD]
    bad_labels = [lb for lb in labels if lb.type in ("duplicate", "malformed", "out_of_range", "unknown_device")]
    assert len(bad) == len(bad_labels)
    for m in bad:
        match = [lb for lb in bad_labels if lb.device == device_of(m.topic) and lb.type == m.bad_type]
        assert match, m
    offline = [lb for lb in labels if lb.type == "offline"]
    wills = [m for m in msgs if m.cls == LWT]
    backs = [m for m in msgs if m.cls == STATUS]
    assert len(wills) == len(offline) == len(backs) >= 1
    assert b'"offline"' in wills[0].payload and wills[0].retain


def test_labels_name_known_types_and_time_ordered_windows():
    run, _ = messages(small_scenario())
    types = {lb.type for lb in run.labels}
    assert types <= {"spike", "flatline", "drift", "offset", "dropout", "duplicate", "out_of_order", "malformed",
                      "clock_skew", "offline", "pollution_episode", "contamination", "out_of_range", "unknown_device"}
    for lb in run.labels:
        assert run.start_ms <= lb.start <= lb.end <= run.end_ms
        d = json.loads(lb.to_json())
        assert list(d) == ["device", "kind", "field", "start", "end", "type", "run", "trace"]
    pol = [lb for lb in run.labels if lb.type == "pollution_episode"]
    assert len({lb.device for lb in pol}) >= 3 and {lb.field for lb in pol} == {"pm25", "no2"}


def test_dry_run_line_format():
    _, msgs = messages(small_scenario())
    lines = [json.loads(dry_run_line(m)) for m in msgs]
    assert all(set(d) in ({"t", "topic", "payload"}, {"t", "topic", "payload_b64"}) for d in lines)
    b64 = [d for d in lines if "payload_b64" in d]
    assert b64 and base64.b64decode(b64[0]["payload_b64"]).startswith(b"\xff\xfe")
