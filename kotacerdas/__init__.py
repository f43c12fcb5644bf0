"""Kota Cerdas: shared core (sensor catalogue, wire contract, settings, CLI)."""

__version__ = "0.1.0"
