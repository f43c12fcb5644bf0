"""Kota Cerdas firmware."""
