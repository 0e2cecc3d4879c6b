#!/usr/bin/env python3
"""dwepc lab report: DIR/summary.md and PNG plots from DIR/results.jsonl
(one JSON object per policy, cell and seed, written by dwepc-lab).

Usage: python3 lab/report.py DIR [BENCHMARKS.md [NAME]] [--table README.md]

With a second argument, the tables of summary.md (everything after its
title) also replace the part of that file between the lines
"<!-- lab tables: begin -->" and "<!-- lab tables: end -->" (with NAME:
"<!-- NAME: begin -->" and "<!-- NAME: end -->"). With --table FILE, the
comparison table alone (every cell, the median p99 of each policy) also
replaces the part of FILE between "<!-- lab comparison: begin -->" and
"<!-- lab comparison: end -->".

Every number is the median over the seeds with the range [min-max]; a
difference between two policies smaller than the larger of their two ranges
is reported as a tie. Ratios "vs least_conn" compare the medians.

Plots (matplotlib, Debian's python3-matplotlib), seed 1 of each cell:
  util_<cell>.png    per-node bottleneck utilisation over the measured part,
                     one panel per policy (event time marked)
  shares_<cell>.png  cells with a capacity event: the share of requests per
                     node (5-s mean) for least_conn, pick=least_conn and the default, and the ideal
                     split after the event (dashed)
  p99_vs_lc.png      p99 of every policy relative to least_conn, per cell
"""
import json
import math
import os
import sys
from collections import defaultdict

ORDER = ["round_robin", "weighted_rr", "least_conn", "weighted_least_conn", "random2_least_conn",
         "least_time", "random_two", "dynamic_wlc", "dwepc_paper", "dwepc", "dwepc_expected_delay",
         "dwepc_least_time", "dwepc_least_time_drawn", "dwepc_least_time_drawn4", "dwepc_least_time_drawn8", "dwepc_least_time_scan", "least_time_slow_start", "dwepc_least_time_slow_start",
         "dwepc_least_time_prometheus", "oracle"]
BASE = "least_conn"
# the default mode (shares, pick=least_time) in the lab's names
OURS = "dwepc_least_time"


def med(xs):
    xs = sorted(x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x)))
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def rng(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return (min(xs), max(xs)) if xs else (None, None)


def num(x, nd):
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:.0f}"
    return f"{x:.{nd}f}"


def mr(xs, nd=1):
    """median [min–max]"""
    m = med(xs)
    lo, hi = rng(xs)
    if m is None:
        return "—"
    if len([x for x in xs if x is not None]) <= 1 or lo == hi:
        return num(m, nd)
    return f"{num(m, nd)} [{num(lo, nd)}–{num(hi, nd)}]"


def verdict(ours, base, lower_is_better=True):
    """better / worse / tie: a difference of medians smaller than the larger
    range is a tie."""
    mo, mb = med(ours), med(base)
    if mo is None or mb is None:
        return "—"
    if min(len(ours), len(base)) < 2:
        return "1 seed"
    lo_o, hi_o = rng(ours)
    lo_b, hi_b = rng(base)
    spread = max(hi_o - lo_o, hi_b - lo_b)
    d = mo - mb
    if abs(d) <= spread:
        return "tie"
    better = d < 0 if lower_is_better else d > 0
    return "better" if better else "worse"


def load(d):
    rows = []
    with open(os.path.join(d, "results.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def group(rows):
    cells = defaultdict(lambda: defaultdict(list))
    meta = {}
    for r in rows:
        cells[r["cell"]][r["policy"]].append(r)
        meta.setdefault(r["cell"], r)
    return cells, meta


def pol_order(p):
    return ORDER.index(p) if p in ORDER else 99


def p99(r):
    return r.get("p99_ms")


def errors(r):
    return r["timeouts"] + r["http_5xx"] + r["dropped"]


def cell_order(cells, meta):
    return sorted(cells, key=lambda c: list(meta.keys()).index(c))


def describe(m):
    fr = f", {m['frontends']} frontends" if m.get("frontends", 1) > 1 else ""
    real = (f", **on real CPUs** (cgroups; one core stands for {m['real_cpu']:.0f} MHz; policies one after "
            f"another)" if m.get("real_cpu") else "")
    return (f"scenario `{m['scenario']}`, {m['workload']}, open loop at {m['level']}× "
            f"({m['offered_rps']:.0f} req/s offered), counters {m['cadence']}{fr}{real}, "
            f"{m['duration_s']:.0f} s measured")


# the targets, against least_conn in the same cell
P99_07 = {"background", "contention", "two_frontends"}
STEP = {"contention", "step"}


def judge(ratio, want, v):
    """met / tie / missed by how much, for a ratio that must be <= want."""
    if ratio is None:
        return "—"
    if ratio <= want:
        return "met"
    if v == "tie":
        return f"tie (off by {ratio / want - 1:.1%}, within the seeds' range)"
    return f"missed by {ratio / want - 1:.1%}"


def targets(cells, meta):
    """Rows of (cell, target, dwepc, least_conn, verdict)."""
    out = []
    for c in cell_order(cells, meta):
        pols = cells[c]
        if OURS not in pols or BASE not in pols:
            continue
        m = meta[c]
        o, b = pols[OURS], pols[BASE]
        po, pb = [p99(r) for r in o], [p99(r) for r in b]
        ratio = med(po) / med(pb) if med(po) and med(pb) else None
        if 0.5 <= m["level"] <= 0.9 or m["scenario"] == "light":
            want = 0.7 if m["scenario"] in P99_07 else 1.0
            v = verdict(po, [x * want for x in pb])
            out.append((c, f"p99 ≤ {want}× least_conn's", f"{mr(po, 0)} ms", f"{mr(pb, 0)} ms",
                        judge(ratio, want, v) + f" (ratio {num(ratio, 2)})"))
            co, cb = [r["bottleneck"]["cov"] for r in o], [r["bottleneck"]["cov"] for r in b]
            cr = med(co) / med(cb) if med(co) and med(cb) else None
            out.append((c, "CoV of bottleneck utilisation ≤ least_conn's", mr(co, 3), mr(cb, 3),
                        judge(cr, 1.0, verdict(co, cb))))
        if m["level"] >= 1.0:
            go, gb = [r["goodput"] for r in o], [r["goodput"] for r in b]
            gr = med(gb) / med(go) if med(go) and med(gb) else None
            out.append((c, "goodput ≥ least_conn's", f"{mr(go)} req/s", f"{mr(gb)} req/s",
                        judge(gr, 1.0, verdict(go, gb, lower_is_better=False))))
        if m["scenario"] in STEP and any(r.get("settle_s") is not None or r.get("event_s") is not None for r in o):
            period = int(m["cadence"].split("s/")[0])
            st = [r.get("settle_s") for r in o]
            never = sum(1 for x in st if x is None)
            okst = never == 0 and max(st) <= 3 * period
            out.append((c, f"settled within 10 % in ≤ 3 sample periods ({3 * period} s)",
                        mr(st, 0) + (f" ({never} never)" if never else "") + " s",
                        mr([r.get("settle_s") for r in b], 0) + " s", "met" if okst else "missed"))
            mo = [r.get("max_over_target") for r in o]
            out.append((c, "no node above 1.5× its target share in any 5-s window", mr(mo, 2),
                        mr([r.get("max_over_target") for r in b], 2),
                        "met" if mo and max(x for x in mo if x is not None) <= 1.5 else "missed"))
    return out


# the feedback baselines and the oracle (issue 19's targets), per seed in the
# same run: ratios of a counter-driven candidate's p99 to each
CANDIDATES = ["dwepc", "dwepc_least_time"]
BASELINES = ["least_conn", "weighted_least_conn", "least_time", "random_two"]
COUNTERS_SEE = {"background", "contention", "mix_shift", "resize"}
FEEDBACK = {"four_frontends", "eight_frontends"}
SLOW_START = [("least_time", "least_time_slow_start"), ("dwepc_least_time", "dwepc_least_time_slow_start")]


def per_seed(pols, cand, ref):
    """p99(cand) / p99(ref) per seed present in both (ref: a policy name,
    or a list of them for their best p99 in that seed)."""
    refs = ref if isinstance(ref, list) else [ref]
    out = []
    for r in pols.get(cand, []):
        best = [p99(x) for q in refs for x in pols.get(q, []) if x["seed"] == r["seed"] and p99(x)]
        if best and p99(r):
            out.append(p99(r) / min(best))
    return out


def feedback_targets(cells, meta):
    """Rows of (cell, candidate, p99, vs dwepc, vs least_time, vs best
    baseline, vs oracle, what the cell asks and the result)."""
    out = []
    for c in cell_order(cells, meta):
        pols, m = cells[c], meta[c]
        if "oracle" not in pols and "least_time" not in pols:
            continue
        for cand in [x for x in CANDIDATES if x in pols]:
            vs_d = per_seed(pols, cand, "dwepc")
            vs_lt = per_seed(pols, cand, "least_time")
            vs_best = per_seed(pols, cand, [b for b in BASELINES if b in pols])
            vs_or = per_seed(pols, cand, "oracle")
            asks = []
            if 0.5 <= m["level"] <= 0.9:
                asks.append(("≤ 1.0× best baseline", vs_best, 1.0))
                if m.get("frontends", 1) == 1:
                    asks.append(("≤ 1.05× oracle", vs_or, 1.05))
            if m["scenario"] in FEEDBACK:
                if cand != "dwepc":
                    asks.append(("≤ 0.8× dwepc", vs_d, 0.8))
                asks.append(("≤ 1.0× least_time", vs_lt, 1.0))
            if m["scenario"] in COUNTERS_SEE:
                asks.append(("≤ 0.9× least_time", vs_lt, 0.9))
            if m["level"] >= 1.0:
                # the best baseline's goodput over the candidate's, per seed
                gb = [max(x["goodput"] for q in BASELINES for x in pols.get(q, []) if x["seed"] == r["seed"])
                      / r["goodput"] for r in pols[cand] if r["goodput"]]
                asks.append(("goodput ≥ every baseline's", gb, 1.0))
            if m["scenario"] == "slowdown":
                asks.append(("≤ 1.0× least_conn", per_seed(pols, cand, "least_conn"), 1.0))
            res = "; ".join(f"{a}: " + ("—" if med(v) is None else
                                        "met" if med(v) <= w else f"missed by {med(v) / w - 1:.0%}")
                            for a, v, w in asks if v)
            out.append((c, cand, mr([p99(r) for r in pols[cand]], 0), mr(vs_d, 2), mr(vs_lt, 2),
                        mr(vs_best, 2), mr(vs_or, 2), res))
    return out


def feedback_section(cells, meta):
    """Lines of the table of ratios against the feedback baselines and the oracle."""
    out = []
    ft = feedback_targets(cells, meta)
    if ft:
        out += ["## Against the feedback baselines and the oracle", "",
                "Ratios of p99 per seed, in the same run, median [range] over the seeds; \"best baseline\" is "
                "the lowest p99 of least_conn, weighted least_conn, least_time and random_two in that seed; a "
                "target is met when the median ratio is on its side.", "",
                "| cell | policy | p99 | vs dwepc | vs least_time | vs best baseline | vs oracle | targets |",
                "|---|---|---|---|---|---|---|---|"]
        out += ["| " + " | ".join(row) + " |" for row in ft]
        out.append("")
    return out


def slow_start_section(cells, meta):
    """Lines of the table of each policy with and without slow start."""
    out = []
    slow = [(c, a, b) for c in cell_order(cells, meta) for a, b in SLOW_START
            if a in cells[c] and b in cells[c]]
    if slow:
        out += ["## Slow start", "",
                "The same policy with `slow_start=30s` and without, per seed in the same run, median [range].", "",
                "| cell | policy | p99 without | p99 with | p99 ratio | p95 ratio |", "|---|---|---|---|---|---|"]
        for c, a, b in slow:
            pa, pb = cells[c][a], cells[c][b]
            r99 = [p99(y) / p99(x) for x in pa for y in pb if x["seed"] == y["seed"] and p99(x)]
            r95 = [y["p95_ms"] / x["p95_ms"] for x in pa for y in pb if x["seed"] == y["seed"] and x["p95_ms"]]
            out.append(f"| {c} | {a} | {mr([p99(x) for x in pa], 0)} | {mr([p99(y) for y in pb], 0)} | "
                       f"{mr(r99, 2)} | {mr(r95, 2)} |")
        out.append("")
    return out


def vcenter_cost(r):
    """(logins, calls per minute) the run's vCenter saw, or (None, None)."""
    v = r.get("vcenter") or {}
    calls = sum((v.get("calls") or {}).values())
    mins = (v.get("run_s") or 0) / 60
    if not v or not mins:
        return None, None
    return v.get("logins"), calls / mins


def prometheus_section(cells, meta):
    """Lines of the table of the default reading vCenter directly (each
    frontend polling) against the same through vmware_exporter and
    Prometheus, per seed in the same run."""
    a, b = "dwepc_least_time", "dwepc_least_time_prometheus"
    both = [c for c in cell_order(cells, meta) if a in cells[c] and b in cells[c]]
    if not both:
        return []
    out = ["## Counters through Prometheus", "",
           f"`{a}` with every frontend polling vCenter against `{b}`: the same policy with the "
           "counters through vmware_exporter 0.18.4 (reading the stack's vCenter when scraped) and one "
           "Prometheus scraping it once per period; per seed in the same run, median [range]. "
           "vCenter: logins and calls per minute over the run, from the simulator's call log.", "",
           "| cell | p99 direct | p99 through Prometheus | p99 ratio | CoV direct | CoV through Prometheus | "
           "CoV ratio | vCenter logins direct / through | vCenter calls/min direct / through |",
           "|---|---|---|---|---|---|---|---|---|"]
    for c in both:
        pa, pb = cells[c][a], cells[c][b]
        pairs = [(x, y) for x in pa for y in pb if x["seed"] == y["seed"]]
        r99 = [p99(y) / p99(x) for x, y in pairs if p99(x) and p99(y)]
        rcov = [y["bottleneck"]["cov"] / x["bottleneck"]["cov"] for x, y in pairs
                if x["bottleneck"]["cov"] and y["bottleneck"]["cov"]]
        la = [vcenter_cost(x)[0] for x in pa]
        lb = [vcenter_cost(y)[0] for y in pb]
        ca = [vcenter_cost(x)[1] for x in pa]
        cb = [vcenter_cost(y)[1] for y in pb]
        out.append(f"| {c} | {mr([p99(x) for x in pa], 0)} | {mr([p99(y) for y in pb], 0)} | {mr(r99, 2)} | "
                   f"{mr([x['bottleneck']['cov'] for x in pa], 3)} | {mr([y['bottleneck']['cov'] for y in pb], 3)} | "
                   f"{mr(rcov, 2)} | {mr(la, 0)} / {mr(lb, 0)} | {mr(ca, 0)} / {mr(cb, 0)} |")
    out.append("")
    return out


def drawn_section(cells, meta):
    """Lines of the table of the default's full scan against the same policy
    with N choices drawn by share (`choices=2`, 4, 8, and on more than 64
    servers the default's own `auto` against `choices=all`), per seed in
    the same run."""
    # (scan, drawn, N): the default scans up to 64 servers, so on more its
    # own row is the drawn one (`auto`: eight) against `choices=all`
    compared = [("dwepc_least_time", "dwepc_least_time_drawn", "2"),
                ("dwepc_least_time", "dwepc_least_time_drawn4", "4"),
                ("dwepc_least_time", "dwepc_least_time_drawn8", "8"),
                ("dwepc_least_time_scan", "dwepc_least_time", "auto")]
    both = [(c, a, b, n) for c in cell_order(cells, meta) for a, b, n in compared
            if a in cells[c] and b in cells[c]]
    if not both:
        return []
    out = ["## Choices drawn against the full scan", "",
           "The default comparing every eligible server at each pick (`dwepc_least_time` on up to 64 "
           "servers, `dwepc_least_time_scan`, `choices=all`, on more) against the same policy with "
           "`choices=N` (N servers drawn in proportion to their shares, the best of them taken; `auto`: "
           "the default above 64 servers); per seed in the same run, median [range]; ratios drawn / scan.", "",
           "| cell | VMs | N | p99 scan | p99 drawn | p99 ratio | CoV scan | CoV drawn | CoV ratio | "
           "max/mean scan | max/mean drawn |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c, a, b, n in both:
        pa, pb = cells[c][a], cells[c][b]
        vms = len(pa[0].get('split') or [])
        if n == "auto":
            # what auto does on this many servers
            n = "auto (8)" if vms > 64 else "auto (all)"
        pairs = [(x, y) for x in pa for y in pb if x["seed"] == y["seed"]]
        r99 = [p99(y) / p99(x) for x, y in pairs if p99(x) and p99(y)]
        rcov = [y["bottleneck"]["cov"] / x["bottleneck"]["cov"] for x, y in pairs
                if x["bottleneck"]["cov"] and y["bottleneck"]["cov"]]
        out.append(f"| {c} | {vms} | {n} | {mr([p99(x) for x in pa], 0)} | "
                   f"{mr([p99(y) for y in pb], 0)} | {mr(r99, 2)} | "
                   f"{mr([x['bottleneck']['cov'] for x in pa], 3)} | {mr([y['bottleneck']['cov'] for y in pb], 3)} | "
                   f"{mr(rcov, 2)} | {mr([x['bottleneck']['max_over_mean'] for x in pa], 2)} | "
                   f"{mr([y['bottleneck']['max_over_mean'] for y in pb], 2)} |")
    out.append("")
    return out


def real_section(cells, meta):
    """Lines comparing each real-CPU cell with its emulated twin (same
    scenario, level and cadence): p99 and rank of every policy in both."""
    out = []
    for c in cell_order(cells, meta):
        m = meta[c]
        if not m.get("real_cpu"):
            continue
        # the cell of the same name without "real_", else one of the same
        # scenario, level and cadence
        twins = [e for e in cell_order(cells, meta) if not meta[e].get("real_cpu")
                and meta[e]["scenario"] == m["scenario"] and meta[e]["level"] == m["level"]
                and meta[e]["cadence"] == m["cadence"]]
        named = c[len("real_"):] if c.startswith("real_") else None
        twin = named if named in twins else (twins[0] if twins else None)
        if twin is None:
            continue
        pols = [p for p in sorted(cells[c], key=pol_order) if p in cells[twin]]
        real = {p: med([p99(r) for r in cells[c][p]]) for p in pols}
        emu = {p: med([p99(r) for r in cells[twin][p]]) for p in pols}
        rank = lambda d: {p: i + 1 for i, p in enumerate(sorted(d, key=lambda q: 1e18 if d[q] is None else d[q]))}
        rr, re_ = rank(real), rank(emu)
        same = all(rr[p] == re_[p] for p in pols)
        if not out:
            out += ["## Real CPUs against the emulation", ""]
        out += [f"`{c}` (real CPUs) against `{twin}` (emulated), the same scenario, level and cadence; "
                f"median p99 over the seeds and the rank (1 = lowest p99) among these policies. "
                f"Ranking {'the same' if same else 'different'}.", "",
                "| policy | p99 real | rank real | p99 emulated | rank emulated | CoV real | CoV emulated |",
                "|---|---|---|---|---|---|---|"]
        for p in pols:
            out.append(f"| {p} | {mr([p99(r) for r in cells[c][p]], 0)} | {rr[p]} | "
                       f"{mr([p99(r) for r in cells[twin][p]], 0)} | {re_[p]} | "
                       f"{mr([r['bottleneck']['cov'] for r in cells[c][p]], 3)} | "
                       f"{mr([r['bottleneck']['cov'] for r in cells[twin][p]], 3)} |")
        out.append("")
    return out


# the comparison table's columns: (policy, heading)
COMPARED = [("dwepc_least_time", "default"), ("dwepc", "`pick=least_conn`"), ("least_conn", "least_conn"),
            ("weighted_least_conn", "weighted least_conn"), ("least_time", "least_time"),
            ("random_two", "random_two"), ("oracle", "oracle")]


def comparison_table(cells, meta):
    """Lines of one table: every cell with the default, the median p99 (ms)
    of each compared policy; at 1.0× and above also the goodput. The
    lowest p99 of the policies an operator could pick (not the oracle) is
    bold."""
    out = ["| cell | " + " | ".join(h for _, h in COMPARED) + " |",
           "|---|" + "---|" * len(COMPARED)]
    for c in cell_order(cells, meta):
        pols, m = cells[c], meta[c]
        if COMPARED[0][0] not in pols:
            continue
        p99s = {p: med([p99(r) for r in pols[p]]) for p, _ in COMPARED if p in pols}
        pickable = [v for p, v in p99s.items() if p != "oracle" and v is not None]
        best = min(pickable) if pickable else None
        row = []
        for p, _ in COMPARED:
            v = p99s.get(p)
            if v is None:
                row.append("—")
                continue
            s = f"{v:.0f}"
            if m["level"] >= 1.0:
                s += f" / {med([r['goodput'] for r in pols[p]]):.0f} req/s"
            row.append(f"**{s}**" if v == best and p != "oracle" else s)
        out.append(f"| {c} | " + " | ".join(row) + " |")
    return out


def summary(rows):
    cells, meta = group(rows)
    out = ["# dwepc lab results", "",
           "Generated by `lab/report.py` from results.jsonl (written by `dwepc-lab`). Every policy of a cell ran "
           "side by side on its own copy of the emulated cluster, with the same seeded load and events (in a "
           "real-CPU cell, one after another on the same cgroups, same seed). Each "
           "number is the median over the seeds with the range [min–max]; a difference smaller than the larger "
           "range is a tie. Latency of successful requests in ms; utilisation from the VMs' own accounting "
           "(ground truth), per node and second, of the bottleneck (the larger of CPU — of what the VM can "
           "really use — and network); CoV and max/mean are per-second averages over the measured part.", ""]
    # overview
    out += [f"## The default ({OURS}) against least_conn", "",
            "| cell | seeds | p99 default | p99 least_conn | p99 ratio | verdict | CoV default | CoV least_conn | "
            "verdict | goodput default | goodput least_conn | errors default | errors least_conn | machine CPU % |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cell_order(cells, meta):
        pols = cells[c]
        if OURS not in pols or BASE not in pols:
            continue
        o, b = pols[OURS], pols[BASE]
        po, pb = [p99(r) for r in o], [p99(r) for r in b]
        co, cb = [r["bottleneck"]["cov"] for r in o], [r["bottleneck"]["cov"] for r in b]
        ratio = (med(po) / med(pb)) if med(po) and med(pb) else None
        cpu = [r.get("machine_cpu_pct") for r in o]
        out.append(f"| {c} | {len(o)} | {mr(po, 0)} | {mr(pb, 0)} | {num(ratio, 2)} | {verdict(po, pb)} | "
                   f"{mr(co, 3)} | {mr(cb, 3)} | {verdict(co, cb)} | {mr([r['goodput'] for r in o])} | "
                   f"{mr([r['goodput'] for r in b])} | {mr([errors(r) for r in o], 0)} | "
                   f"{mr([errors(r) for r in b], 0)} | {mr(cpu, 0)} |")
    out.append("")
    tg = targets(cells, meta)
    if tg:
        out += [f"## Targets set during development ({OURS} against least_conn, same cell)", "",
                "\"met\" needs the median on the right side of the target; \"tie\" means the difference is within "
                "the seeds' range.", "",
                "| cell | target | default | least_conn | result |", "|---|---|---|---|---|"]
        out += [f"| {a} | {b} | {c_} | {d} | {e} |" for a, b, c_, d, e in tg]
        out.append("")
    out += ["## Every policy, every cell", "",
            "Median p99 over the seeds, ms (at 1.0× and above: p99 / goodput); bold: the lowest of the policies "
            "an operator could pick (the oracle is the lab's limit, not one of them).", ""]
    out += comparison_table(cells, meta) + [""]
    out += feedback_section(cells, meta) + slow_start_section(cells, meta) + real_section(cells, meta)
    out += prometheus_section(cells, meta) + drawn_section(cells, meta)
    # per cell
    for c in cell_order(cells, meta):
        pols = cells[c]
        m = meta[c]
        out += [f"## {c}", "", describe(m) + ".", ""]
        has_event = any(r.get("event_s") is not None for rs in pols.values() for r in rs)
        head = ("| policy | goodput req/s | p50 | p95 | p99 | p99 vs least_conn | timeouts | 5xx | "
                "CoV bottleneck | max/mean bottleneck | CoV cpu | CoV net |")
        sep = "|---|---|---|---|---|---|---|---|---|---|---|---|"
        if has_event:
            head += " settle s | max share/target (5 s) |"
            sep += "---|---|"
        out += [head, sep]
        base_p99 = med([p99(r) for r in pols.get(BASE, [])])
        for p in sorted(pols, key=pol_order):
            rs = pols[p]
            rel = [(p99(r) / base_p99) if (p99(r) is not None and base_p99) else None for r in rs]
            line = (f"| {p} | {mr([r['goodput'] for r in rs])} | {mr([r['p50_ms'] for r in rs], 0)} | "
                    f"{mr([r['p95_ms'] for r in rs], 0)} | {mr([p99(r) for r in rs], 0)} | {mr(rel, 2)} | "
                    f"{mr([r['timeouts'] for r in rs], 0)} | {mr([r['http_5xx'] for r in rs], 0)} | "
                    f"{mr([r['bottleneck']['cov'] for r in rs], 3)} | "
                    f"{mr([r['bottleneck']['max_over_mean'] for r in rs], 2)} | "
                    f"{mr([r['cpu']['cov'] for r in rs], 3)} | {mr([r['net']['cov'] for r in rs], 3)} |")
            if has_event:
                settle = [r.get("settle_s") for r in rs]
                never = sum(1 for s in settle if s is None)
                st = mr(settle, 0) + (f" ({never} never)" if never else "")
                line += f" {st} | {mr([r.get('max_over_target') for r in rs], 2)} |"
            out.append(line)
        out.append("")
        if has_event:
            r0 = next(r for rs in pols.values() for r in rs if r.get("target"))
            out.append(f"Event at {r0['event_s']:.0f} s; ideal split after it: "
                       + "/".join(f"{x:.3f}" for x in r0["target"])
                       + ". Settle: seconds after the event until the 5-s mean of the request shares stays within "
                         "0.10 (total variation) of the ideal split for 10 s; max share/target: the largest 5-s "
                         "mean share of a node over its ideal share after the event (nodes with an ideal share "
                         "of at least 2 %, or of half the mean share where that is less).")
            out.append("")
        counters = [(p, r) for p, rs in pols.items() for r in rs if r.get("balancing")]
        if counters:
            out.append("Counter-driven policies: seconds of the measured part on counters / on their fallback "
                       "(weighted round robin, or response times for the default) (first frontend's status page, "
                       "once a second), per seed:")
            out.append("")
            for p, r in sorted(counters, key=lambda x: (pol_order(x[0]), x[1]["seed"])):
                b = r["balancing"]
                out.append(f"* {p}, seed {r['seed']}: {b.count('dwepc')} s on counters, "
                           f"{b.count('round_robin')} s round robin, {b.count('response_times')} s response times" + (
                               f", {b.count('')} s no answer" if b.count('') else "")
                           + (f"; log: " + " · ".join(l.split('dwepc: ', 1)[-1][:110] for l in r['log'][:4])
                              if r.get("log") else ""))
            out.append("")
    return "\n".join(out) + "\n"


def finish(fig, axes, title, path):
    # a legend of every node up to twelve; above, it would hide the panel
    # (and the colours repeat): the title says how many
    if len([ln for ln in axes[0].get_lines() if not ln.get_label().startswith("_")]) <= 12:
        axes[0].legend(ncol=5, fontsize=7, loc="upper right")
    axes[-1].set_xlabel("seconds of the measured part")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plots(rows, d):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: matplotlib missing, no plots", file=sys.stderr)
        return
    cells, meta = group(rows)
    for c, pols in cells.items():
        firsts = {p: sorted(rs, key=lambda r: r["seed"])[0] for p, rs in pols.items()}
        names = sorted(firsts, key=pol_order)
        fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.9 * len(names) + 0.6), sharex=True)
        if len(names) == 1:
            axes = [axes]
        for ax, p in zip(axes, names):
            r = firsts[p]
            series = r["util_series"]
            if series:
                for i in range(len(series[0])):
                    ax.plot([row[i] if row[i] is not None else float("nan") for row in series],
                            lw=0.8, label=f"vm{i + 1}")
            if r.get("event_s") is not None:
                ax.axvline(r["event_s"], color="k", ls=":", lw=1)
            ax.set_ylabel(p, fontsize=8)
            ax.set_ylim(0, 1.3)
            ax.grid(alpha=0.3)
        nodes = len(firsts[names[0]]["util_series"][0]) if firsts[names[0]]["util_series"] else 0
        finish(fig, axes, f"{c}: bottleneck utilisation per node ({nodes} nodes, seed {firsts[names[0]]['seed']})",
               os.path.join(d, f"util_{c}.png"))
        plt.close(fig)
        ev = [firsts[p] for p in (BASE, "dwepc", OURS) if p in firsts and firsts[p].get("target")]
        if ev:
            fig, axes = plt.subplots(len(ev), 1, figsize=(9, 2.4 * len(ev) + 0.6), sharex=True)
            if len(ev) == 1:
                axes = [axes]
            for ax, r in zip(axes, ev):
                sh = r["shares"]
                n = len(r["target"])
                for i in range(n):
                    vals = [row[i] if row[i] is not None else float("nan") for row in sh]
                    sm = [sum(v for v in vals[max(0, t - 4):t + 1] if not math.isnan(v)) /
                          max(1, sum(1 for v in vals[max(0, t - 4):t + 1] if not math.isnan(v)))
                          for t in range(len(vals))]
                    line, = ax.plot(sm, lw=0.9, label=f"vm{i + 1}")
                    ax.axhline(r["target"][i], color=line.get_color(), ls="--", lw=0.7)
                ax.axvline(r["event_s"], color="k", ls=":", lw=1)
                ax.set_ylabel(r["policy"], fontsize=8)
                ax.grid(alpha=0.3)
            finish(fig, axes, f"{c}: share of requests per node (5-s mean) and ideal split after the event",
                   os.path.join(d, f"shares_{c}.png"))
            plt.close(fig)
    # p99 relative to least_conn
    order = [c for c in meta if BASE in cells[c]]
    pols = sorted({p for c in order for p in cells[c]}, key=pol_order)
    if order:
        fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(order)), 4))
        w = 0.8 / max(1, len(pols))
        for k, p in enumerate(pols):
            ys = []
            for c in order:
                b = med([p99(r) for r in cells[c][BASE]])
                o = med([p99(r) for r in cells[c].get(p, [])])
                ys.append(o / b if (o and b) else float("nan"))
            ax.bar([i + k * w for i in range(len(order))], ys, w, label=p)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks([i + 0.4 for i in range(len(order))])
        ax.set_xticklabels(order, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("p99 / least_conn's (median of seeds)")
        ax.legend(fontsize=7, ncol=3)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(os.path.join(d, "p99_vs_lc.png"), dpi=90)
        plt.close(fig)


def replace_between(path, name, body):
    """Replaces the lines between `<!-- name: begin -->` and `<!-- name:
    end -->` of `path` with `body`."""
    BEGIN, END = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    with open(path) as f:
        doc = f.read()
    if doc.count(BEGIN) != 1 or doc.count(END) != 1 or doc.index(BEGIN) > doc.index(END):
        raise SystemExit(f"{path}: needs one line {BEGIN!r} and, after it, one line {END!r}")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n\n{body}\n\n{END}{tail}")


def embed(path, text, name="lab tables"):
    """The tables of a summary (`text` without its title, a heading level
    down) between `path`'s `name` markers."""
    body = text.split("\n", 1)[1].strip("\n")  # without the title
    body = body.replace("\n## ", "\n### ")  # one level below BENCHMARKS.md's section
    replace_between(path, name, body)


def main():
    args = sys.argv[1:]
    table = None
    if "--table" in args:
        i = args.index("--table")
        if i + 1 >= len(args):
            print(__doc__, file=sys.stderr)
            return 2
        table = args[i + 1]
        del args[i:i + 2]
    if len(args) not in (1, 2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    d = args[0]
    rows = load(d)
    text = summary(rows)
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write(text)
    if len(args) >= 2:
        embed(args[1], text, *args[2:])
    if table:
        cells, meta = group(rows)
        replace_between(table, "lab comparison", "\n".join(comparison_table(cells, meta)))
    plots(rows, d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
