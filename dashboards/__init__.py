"""Kota Cerdas dashboards."""
