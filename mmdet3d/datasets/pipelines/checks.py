"""Argument and results-dict checks shared by the transforms, so that bad configs and inputs fail in one line."""
import numbers


def require(results, key, transform, producer=None):
    """``results[key]``, or a KeyError naming the key, the transform and (if given) what should have produced it."""
    if key not in results:
        hint = f" (add {producer} before it)" if producer else ""
        raise KeyError(f"{transform}: the results dict has no '{key}'{hint}")
    return results[key]


def check_range(name, value, lower=None):
    """``value`` as a ``(lo, hi)`` float pair with ``lo <= hi`` (and ``lo >= lower`` if given)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair [lo, hi], got {value!r}")
    if not all(isinstance(v, numbers.Real) for v in value):
        raise ValueError(f"{name} must hold two numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if lo > hi:
        raise ValueError(f"{name} must satisfy lo <= hi, got {value!r}")
    if lower is not None and lo < lower:
        raise ValueError(f"{name} must be >= {lower}, got {value!r}")
    return lo, hi


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_point_range(value):
    """A point-cloud range ``[x0, y0, z0, x1, y1, z1]`` with each minimum below its maximum."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 6:
        raise ValueError(f"point_cloud_range must be [x0, y0, z0, x1, y1, z1], got {value!r}")
    r = [float(v) for v in value]
    if not all(r[i] < r[i + 3] for i in range(3)):
        raise ValueError(f"point_cloud_range must have each minimum below its maximum, got {value!r}")
    return r


def check_classes(value):
    if isinstance(value, (str, bytes)) or not all(isinstance(c, str) for c in value) or len(value) == 0:
        raise ValueError(f"classes must be a non-empty list of names, got {value!r}")
    return list(value)
