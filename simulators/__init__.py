"""Kota Cerdas simulators."""
