"""Entities, policies and decisions. Plain Python: no I/O, no framework imports."""
