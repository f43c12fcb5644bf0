"""Kota Cerdas gateway."""
