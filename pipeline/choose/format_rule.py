"""Whether a shipped-file format may ship: its CV micro and macro F1 within the bound of fp32 in every mode."""


def passes(cv: dict, bound: float) -> bool:
    """Within `bound` of fp32 (or above) in every mode, micro and macro."""
    return all(v["format"] >= v["fp32"] - bound for by_avg in cv.values() for v in by_avg.values())
