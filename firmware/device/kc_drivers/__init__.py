# Sensor drivers: each speaks its part's real protocol over an injected bus object
# (machine.UART / machine.I2C / onewire.OneWire / ADC on the board, fakes in tests).
