"""The pod bandwidth annotations that kubelet hands the network plugin,
`kubernetes.io/ingress-bandwidth` and `kubernetes.io/egress-bandwidth`. They are read as
kubernetes' pkg/util/bandwidth ExtractPodBandwidthResources reads them: a resource.Quantity in
bits per second, at least 1k and at most 1P. Ingress limits what reaches the pod; egress limits
what it sends."""
from __future__ import annotations

import math
import re
from fractions import Fraction

INGRESS_BANDWIDTH = "kubernetes.io/ingress-bandwidth"
EGRESS_BANDWIDTH = "kubernetes.io/egress-bandwidth"
BANDWIDTH_ANNOTATIONS = (INGRESS_BANDWIDTH, EGRESS_BANDWIDTH)
MIN_BANDWIDTH, MAX_BANDWIDTH = 10**3, 10**15        # resource.MustParse("1k"), resource.MustParse("1P")

# resource.Quantity's suffixes: decimal SI, binary SI, and a decimal exponent (apimachinery's
# pkg/api/resource/suffix.go); "K" is not one of them, "k" is
_SUFFIXES = {"": 1, "m": Fraction(1, 1000), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
             "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_QUANTITY = re.compile(r"^\+?(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]|[eE][+-]?\d{1,3})?$")
EXPECTED = "expected a quantity of bits per second, such as 100M, 1G or 512Ki"


def parse_quantity(text: str) -> Fraction:
    """A non-negative resource.Quantity as an exact number; ValueError when it is not one."""
    m = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(EXPECTED)
    number, suffix = Fraction(m.group(1)), m.group(2) or ""
    if suffix[:1] in ("e", "E") and suffix not in _SUFFIXES:
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def bandwidth_bits(text: str) -> int:
    """The annotation's value in bits per second, as Quantity.Value() gives it (rounded up), within
    pkg/util/bandwidth's bounds; ValueError with upstream's words otherwise."""
    value = math.ceil(parse_quantity(text))
    if value < MIN_BANDWIDTH:
        raise ValueError("resource is unreasonably small (< 1kbit); " + EXPECTED)
    if value > MAX_BANDWIDTH:
        raise ValueError("resource is unreasonably large (> 1Pbit); " + EXPECTED)
    return value


def describe_bits(bits: int) -> str:
    """100000000 -> '100 Mbit/s'."""
    for unit, scale in (("Gbit/s", 10**9), ("Mbit/s", 10**6), ("kbit/s", 10**3)):
        if bits >= scale:
            return f"{bits / scale:g} {unit}"
    return f"{bits} bit/s"
