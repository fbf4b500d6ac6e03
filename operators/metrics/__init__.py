"""Metric providers: one module each behind one interface, chosen per metric by its provider block."""
