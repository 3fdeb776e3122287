"""Data set versions and what they hold: each version's data report (``report``) and the drift
between two versions' reports (``drift``)."""
