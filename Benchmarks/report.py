#!/usr/bin/env python3
"""Summarizes bench.sh's samples: markdown tables (median, min-max, ratios) and JSON.

Usage: report.py WORKDIR OUTPREFIX VDISKFS_BINARY  → OUTPREFIX.md, OUTPREFIX.json
Ratios are speedups of vdiskfs (> 1 = vdiskfs better): for throughput vdiskfs / other, for
latency other / vdiskfs. "peer" = the best (by median) of qemu-storage-daemon and the libyal tool
that showed the same bytes as `qemu-img convert`.
"""
import json
import statistics
import sys
from collections import defaultdict

work, out, binary = sys.argv[1:4]
CACHE_BUDGET_MIB = 32  # vdiskfs's default cache (what covers the chain, at most 32 MiB)
PEERS = ("qsd", "qcowmount", "vmdkmount", "vhdimount")


def rows(name):
    try:
        with open(f"{work}/{name}") as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        return []


meta = {r[0]: (r[1] if len(r) > 1 else "") for r in rows("meta.tsv")}
samples = defaultdict(list)  # (workload, image, tool) -> [value]
rss = defaultdict(int)  # (workload, image, tool) -> max KiB
units = {}
for workload, image, tool, run, value, unit, rss_kib in rows("samples.tsv"):
    try:
        v = float(value)
    except ValueError:
        continue
    samples[(workload, image, tool)].append(v)
    rss[(workload, image, tool)] = max(rss[(workload, image, tool)], int(rss_kib or 0))
    units[workload] = unit
correct = [{"image": i, "tool": t, "verdict": v} for i, t, v in rows("correct.tsv")]
checks = [{"workload": w, "tool": t, "run": int(r), "qemu_img_check": c} for w, t, r, c in rows("checks.tsv")]

workloads = []
for w in ["seq_read_warm", "seq_read_cold", "rand_read_1j", "rand_read_4j", "mount_ms",
          "write_alloc_rand_1j", "write_alloc_rand_4j", "write_empty_rand_1j", "write_empty_rand_4j",
          "write_empty_seq"]:
    if any(k[0] == w for k in samples):
        workloads.append(w)


def stat(vals):
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def speedup(workload, v, other):
    if not v or not other:
        return None
    return other / v if workload == "mount_ms" else v / other


summary = []
for w in workloads:
    images = sorted({k[1] for k in samples if k[0] == w}, key=lambda i: list(dict.fromkeys(
        k[1] for k in samples)).index(i))
    for image in images:
        tools = {k[2]: stat(samples[k]) for k in samples if k[0] == w and k[1] == image}
        v = tools.get("vdiskfs", {}).get("median")
        peers = {t: s["median"] for t, s in tools.items() if t in PEERS}
        if peers:
            best = (min if w == "mount_ms" else max)(peers, key=peers.get)
        else:
            best = None
        entry = {
            "workload": w, "image": image, "unit": units.get(w, ""), "tools": tools,
            "rss_mib": {t: round(rss[(w, image, t)] / 1024, 1) for t in tools if rss[(w, image, t)]},
            "best_peer": best,
            "vs_qsd": speedup(w, v, peers.get("qsd")),
            "vs_best_peer": speedup(w, v, peers.get(best)) if best else None,
            "vs_raw": speedup(w, v, tools.get("raw", {}).get("median")),
            # FUSECeiling: a minimal libfuse server over the raw file (no format); not a peer.
            "vs_ceiling": speedup(w, v, tools.get("ceiling", {}).get("median")),
            "ceiling_vs_best_peer": speedup(w, tools.get("ceiling", {}).get("median"), peers.get(best))
            if best else None,
        }
        summary.append(entry)

# Floors of issue 6.
floors = []


def floor(name, value, limit, higher=True):
    if value is None:
        return
    ok = value >= limit if higher else value <= limit
    floors.append({"floor": name, "value": round(value, 3), "limit": limit, "holds": ok})


for e in summary:
    w, img = e["workload"], e["image"]
    if w in ("seq_read_warm", "rand_read_1j", "rand_read_4j"):
        q_limit = {"seq_read_warm": 2.0, "rand_read_1j": 1.5, "rand_read_4j": 2.0}[w]
        p_limit = {"seq_read_warm": 1.1, "rand_read_1j": 1.0, "rand_read_4j": 1.2}[w]
        if img == "qcow2c":
            q_limit = 1.5
        floor(f"{w} {img} vs qsd", e["vs_qsd"], q_limit)
        floor(f"{w} {img} vs best peer ({e['best_peer']})", e["vs_best_peer"], p_limit)
    elif w.startswith("write_"):
        floor(f"{w} vs qsd", e["vs_qsd"], 1.5)
    elif w == "mount_ms":
        v = e["tools"].get("vdiskfs")
        if v:
            floor(f"mount latency {img} (max ms)", v["max"], 200, higher=False)
for (w, img, t), kib in rss.items():
    if t == "vdiskfs" and kib:
        pass
max_rss = max((kib for (w, img, t), kib in rss.items() if t == "vdiskfs"), default=0)
if max_rss:
    floor("vdiskfs peak RSS, MiB (max over all workloads)", max_rss / 1024, CACHE_BUDGET_MIB + 64, higher=False)
failed_checks = [c for c in checks if c["qemu_img_check"] != "clean"]
floors.append({"floor": "qemu-img check clean after every write run", "value": f"{len(failed_checks)} failed",
               "limit": 0, "holds": not failed_checks})

doc = {"meta": meta, "binary": binary, "correctness": correct, "write_checks": checks,
       "results": summary, "floors": floors}
with open(out + ".json", "w") as f:
    json.dump(doc, f, indent=1)

# Markdown.
TITLES = {
    "seq_read_warm": "Sequential read, dd bs=1M, host cache warm",
    "seq_read_cold": "Sequential read, dd bs=1M, host cache cold (drop_caches)",
    "rand_read_1j": "4 KiB random read, fio psync direct=1, numjobs=1",
    "rand_read_4j": "4 KiB random read, fio psync direct=1, numjobs=4",
    "mount_ms": "Mount latency: exec to a readable file (ms, lower is better; ratio = other / vdiskfs)",
    "write_alloc_rand_1j": "qcow2 4 KiB random write, fully allocated image, numjobs=1",
    "write_alloc_rand_4j": "qcow2 4 KiB random write, fully allocated image, numjobs=4",
    "write_empty_rand_1j": "qcow2 4 KiB random write, empty image (allocating), numjobs=1",
    "write_empty_rand_4j": "qcow2 4 KiB random write, empty image (allocating), numjobs=4",
    "write_empty_seq": "qcow2 1 MiB sequential write, empty image (allocating)",
}


def fmt(x):
    if x is None:
        return "–"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def cell(s):
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})" if s else "–"


def r(x):
    return "–" if x is None else f"{x:.2f}×"


md = [f"# vdiskfs benchmark {meta.get('timestamp', '')}", ""]
md.append(f"Machine: {meta.get('nproc')} CPUs ({meta.get('cpu')}), {meta.get('mem_gib')} GiB, kernel "
          f"{meta.get('kernel')}; {meta.get('qemu')}; libyal: {meta.get('libyal')}; {meta.get('fio')}.  ")
md.append(f"vdiskfs commit {meta.get('vdiskfs_commit')}; image {meta.get('size_mb')} MiB, {meta.get('runs')} runs "
          f"(interleaved, fresh mount each), fio {meta.get('fio_time_s')} s; load average at start "
          f"{meta.get('loadavg_start')}, at end {meta.get('loadavg_end')}.  ")
if meta.get("note"):
    md.append(f"Note: {meta['note']}  ")
md += ["", "Ratios are vdiskfs's speedup (> 1 = vdiskfs better); *peer* = the best of qemu-storage-daemon and "
       "the libyal tool that reads the format correctly. Cells: median (min–max).", ""]
md += ["## Correctness of the views (vs `qemu-img convert -O raw`)", "", "| image | tool | content |", "|---|---|---|"]
md += [f"| {c['image']} | {c['tool']} | {c['verdict']} |" for c in correct]
for w in workloads:
    md += ["", f"## {TITLES.get(w, w)} [{units.get(w, '')}]", ""]
    md += ["| image | vdiskfs | qemu-storage-daemon | libyal | raw file | ÷ qsd | ÷ best peer | ÷ raw |",
           "|---|---|---|---|---|---|---|---|"]
    for e in (e for e in summary if e["workload"] == w):
        t = e["tools"]
        yal = next((n for n in t if n in PEERS and n != "qsd"), None)
        md.append(f"| {e['image']} | {cell(t.get('vdiskfs'))} | {cell(t.get('qsd'))} | "
                  f"{(yal + ' ' + cell(t[yal])) if yal else '–'} | {cell(t.get('raw'))} | {r(e['vs_qsd'])} | "
                  f"{r(e['vs_best_peer'])}{' (' + e['best_peer'] + ')' if e['best_peer'] else ''} | {r(e['vs_raw'])} |")
# The transport ceiling.
ceiling_rows = [e for e in summary if "ceiling" in e["tools"]]
if ceiling_rows:
    md += ["", "## Transport ceiling: a minimal libfuse server (FUSECeiling) on the raw file [IOPS]", "",
           "The same transport settings as vdiskfs (multi-threaded loop, 4 threads, clone_fd, direct I/O for "
           "O_DIRECT opens) and nothing else: no image format, no cache. It shows what the FUSE transport alone "
           "allows with these settings on this machine; it is not a peer.", "",
           "| workload | image | FUSECeiling | vdiskfs ÷ ceiling | ceiling ÷ best peer |", "|---|---|---|---|---|"]
    for e in ceiling_rows:
        md.append(f"| {e['workload']} | {e['image']} | {cell(e['tools']['ceiling'])} | {r(e['vs_ceiling'])} | "
                  f"{r(e['ceiling_vs_best_peer'])}{' (' + e['best_peer'] + ')' if e['best_peer'] else ''} |")
# Memory.
md += ["", "## Peak RSS of each server (VmHWM at the end of each run, max over runs), MiB", "",
       "| workload | image | vdiskfs | qemu-storage-daemon | libyal |", "|---|---|---|---|---|"]
for e in summary:
    if not e["rss_mib"]:
        continue
    m = e["rss_mib"]
    yal = next((f"{n} {m[n]}" for n in m if n in PEERS and n != "qsd"), "–")
    md.append(f"| {e['workload']} | {e['image']} | {m.get('vdiskfs', '–')} | {m.get('qsd', '–')} | {yal} |")
if checks:
    md += ["", "## qemu-img check after each write run", "",
           f"{len(checks) - len(failed_checks)} clean, {len(failed_checks)} failed"
           + (": " + ", ".join(f"{c['workload']}/{c['tool']}/run {c['run']}" for c in failed_checks) if failed_checks else ""),
           ]
if "callgrind_instructions" in meta:
    md += ["", "## Instruction count (callgrind, fixed workload: HotPathCallgrind)", "",
           f"{meta['callgrind_instructions']} instructions (checksum {meta.get('callgrind_checksum', '?')}): "
           "22,000 warm `LayerChain.status` lookups, 5,000 4 KiB reads of a 64 MiB qcow2, 200 64 KiB compressed-cluster "
           "decodes, 50,000 `TableCache` get/put; image open included."]
md += ["", "## Floors of issue 6", "", "| floor | value | limit | holds |", "|---|---|---|---|"]
md += [f"| {f['floor']} | {f['value']} | {f['limit']} | {'yes' if f['holds'] else '**no**'} |" for f in floors]
with open(out + ".md", "w") as f:
    f.write("\n".join(md) + "\n")
