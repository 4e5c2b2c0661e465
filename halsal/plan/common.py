"""What the parts of :mod:`halsal.plan` share."""

ABLATION_FACTORS = {"depth": "depths", "fusion": "fusions", "modulation": "modulations"}  # variant factor -> ablations key


def unique(items) -> list:
    """``items`` without repeats, in their first order."""
    return list(dict.fromkeys(items))
