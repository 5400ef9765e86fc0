"""Quantiles of Prometheus histograms between two /metrics snapshots, for the bench scripts.

`quantiles(before, after, names)` reads both files and returns, for each histogram named,
the observations made between them and the upper bounds of the buckets holding p50 and
p99: {name: {"count": n, "p50_le_s": le, "p99_le_s": le}} (bounds None when n is 0).
"""


def _buckets(path, name):
    out = {}
    for line in open(path):
        if line.startswith(name + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = int(float(line.split()[-1]))
    return out


def quantiles(before, after, names):
    result = {}
    for name in names:
        b0, b1 = _buckets(before, name), _buckets(after, name)
        live = sorted((le, c - b0.get(le, 0)) for le, c in b1.items())
        n = live[-1][1] if live else 0

        def q(p):
            return next((le for le, c in live if c >= p * n), None) if n else None

        result[name] = {"count": n, "p50_le_s": q(0.5), "p99_le_s": q(0.99)}
    return result
