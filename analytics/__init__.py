"""Kota Cerdas analytics."""
