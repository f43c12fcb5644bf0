# Fake hardware for the firmware: runs under MicroPython (the Node/WebAssembly test
# runner) and CPython (virtual devices). Not part of the board bundle.
