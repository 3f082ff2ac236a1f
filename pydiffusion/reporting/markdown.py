"""The small markdown pieces both reports are made of: a number as text, a mean with its spread, and a table."""
import math


def fmt(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def mean_spread(mean, spread, n: int) -> str:
    """'mean ± spread', with 'n/a' for the spread where one value gives none."""
    return f"{fmt(mean)} ± {fmt(spread) if n > 1 else 'n/a'}"


def md_table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
