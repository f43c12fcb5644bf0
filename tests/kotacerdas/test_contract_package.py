"""The contract is one package with an explicit public surface, it is the only place topic
strings are built, and its device payloads agree with what the firmware sends and accepts."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path
from typing import get_args

import pytest

from kotacerdas import contract
from kotacerdas.contract import Rejection

ROOT = Path(__file__).resolve().parents[2]
DEVICE_DIR = ROOT / "firmware" / "device"
MODULES = ("alerts", "base", "deadletter", "device", "telemetry", "topics")


def test_all_names_exist_and_cover_every_module() -> None:
    assert len(contract.__all__) == len(set(contract.__all__))
    for name in contract.__all__:
        assert hasattr(contract, name), name
    union: set[str] = set()
    for m in MODULES:
        mod = importlib.import_module(f"kotacerdas.contract.{m}")
        for name in mod.__all__:
            assert getattr(mod, name) is getattr(contract, name), f"{m}.{name} is not re-exported as is"
        union |= set(mod.__all__)
    assert union == set(contract.__all__)


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal and f-string (placeholders as ``{}``), docstrings excepted."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    inside_f = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.JoinedStr):
            s = "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                        for v in n.values)
            out.append((n.lineno, s))
        elif (isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
              and id(n) not in inside_f):
            out.append((n.lineno, n.value))
    return out


# a topic of the contract: "<root>/v1/..." followed by the 4 device levels, or a platform/wildcard
# topic; HTTP routes ("/v1/datasets/{id}", "{base}/v1/catalog") have fewer levels and no wildcards
_VERSIONED = re.compile(r"/v(?:1|\{\})/(.*)$")


def _is_topic(s: str) -> bool:
    if "_platform" in s:
        return True
    m = _VERSIONED.search(s)
    return bool(m) and not s.startswith("/") and (m.group(1).count("/") >= 3 or "+" in m.group(1)
                                                  or "#" in m.group(1))


def test_topic_detector_tells_topics_from_http_routes() -> None:
    assert _is_topic("{}/v1/depok/air/{}/telemetry") and _is_topic("{}/v{}/+/+/+") and _is_topic("kc/v1/_platform/x")
    assert not _is_topic("/v1/datasets/{}") and not _is_topic("{}/v1/datasets/{}?format={}")


def test_no_module_outside_kotacerdas_builds_topics_by_hand() -> None:
    # tests build wrong topics on purpose; firmware/device is MicroPython and formats the
    # template kc_schema.TOPIC that firmware/schema_gen.py takes from contract.device_topic
    skip = ("kotacerdas/", "tests/", "firmware/device/", "firmware/fakes/", ".venv/", ".kc/")
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(skip) or "/." in f"/{rel}":
            continue
        for line, s in _strings(ast.parse(path.read_text(), rel)):
            if _is_topic(s):
                found.append(f"{rel}:{line}: {s!r}")
    assert not found, "topic strings built outside kotacerdas/contract:\n" + "\n".join(found)


def test_platform_filter() -> None:
    assert contract.platform_filter("kc", "deadletter", "ingest") == "kc/v1/_platform/deadletter/ingest/#"
    assert contract.platform_filter("kc", "norm") == "kc/v1/_platform/norm/#"
    with pytest.raises(ValueError):
        contract.platform_filter("kc", "telemetry")


@pytest.fixture(scope="module")
def kc_payload():
    sys.path.insert(0, str(DEVICE_DIR))
    try:
        yield importlib.import_module("kc_payload")
    finally:
        sys.path.remove(str(DEVICE_DIR))
        for m in ("kc_payload", "kc_schema"):
            sys.modules.pop(m, None)


def test_firmware_status_and_ack_decode(kc_payload) -> None:  # noqa: ANN001 - a module
    st = contract.decode_status(kc_payload.status("offline", 1_700_000_000_000, fw="1.4.0", reason="lwt"))
    assert st == contract.DeviceStatus("offline", 1_700_000_000_000, "1.4.0", "lwt")
    ack = contract.decode_ack(kc_payload.ack("c-1", False, "unknown command", {"x": 1}))
    assert ack == contract.Ack("c-1", False, "unknown command")
    assert contract.encode_status("online", 5, fw="1") == kc_payload.status("online", 5, fw="1").replace(b" ", b"")


@pytest.mark.parametrize("payload", [b"\xff", b"[1]", b"{", b'{"v":2,"state":"online"}', b'{"v":1,"state":"up"}',
                                     b'{"v":1,"state":"online","ts":"1"}', b'{"v":1,"state":"online","fw":7}'])
def test_bad_status_is_a_rejection(payload: bytes) -> None:
    assert isinstance(contract.decode_status(payload), Rejection)


def test_cmd_round_trip_and_commands_match_the_api() -> None:
    from gateway.api import CommandIn

    assert get_args(CommandIn.model_fields["cmd"].annotation) == contract.COMMANDS  # built from it, in order
    assert CommandIn.model_json_schema()["properties"]["cmd"]["enum"] == list(contract.COMMANDS)
    with pytest.raises(ValueError):
        CommandIn(cmd="selfdestruct")
    doc = contract.encode_cmd("id-1", "ping", {}, 9)
    assert doc == b'{"v":1,"id":"id-1","cmd":"ping","args":{},"ts":9}'
    with pytest.raises(ValueError):
        contract.encode_cmd("id-1", "format_disk", {}, 9)
    assert isinstance(contract.decode_ack(b'{"v":1,"id":1,"ok":true}'), Rejection)
