# mypy: ignore-errors
# MicroPython freeze manifest for a Kota Cerdas board image (ESP32_GENERIC, MicroPython
# 1.27.0, the version pinned in firmware/release.py). Build from a micropython checkout:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/kotacerdas/firmware/manifest.py
# Frozen modules run from flash (no heap for their bytecode, no .mpy files to go stale);
# main.py stays a file on the board so a crash handler change needs no image rebuild.
# A signed app update (kc_update) puts newer .mpy files in /app_a or /app_b, which main.py
# puts ahead of the frozen ones on sys.path.
include("$(PORT_DIR)/boards/manifest.py")  # noqa: F821  (manifest functions are provided by makemanifest)
# every device module but main.py (tests/firmware/test_release.py: this list is the device directory)
for _m in ("kc_backoff", "kc_board", "kc_config", "kc_ecdsa", "kc_http", "kc_improv", "kc_led", "kc_mqtt", "kc_node",
           "kc_ota", "kc_payload", "kc_portal", "kc_provision", "kc_ring", "kc_schema", "kc_sensors", "kc_update",
           "kc_wifi"):
    module(_m + ".py", base_path="device")  # noqa: F821
package("kc_drivers", base_path="device")  # noqa: F821
