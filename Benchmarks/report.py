#!/usr/bin/env python3
"""Summarizes bench.sh's samples: markdown tables (median, min-max, ratios) and JSON.

Usage: report.py WORKDIR OUTPREFIX VDISKFS_BINARY  → OUTPREFIX.md, OUTPREFIX.json
Ratios are speedups of vdiskfs (> 1 = vdiskfs better): for throughput vdiskfs / other, for
latency other / vdiskfs. "peer" = the best (by median) of qemu-storage-daemon and the libyal tool
that showed the same bytes as `qemu-img convert`. "vdiskfs" is the default mount (read-write where
the format can be written), "vdiskfs-ro" the same image mounted `-o ro`.
"""
import json
import statistics
import sys
from collections import defaultdict

work, out, binary = sys.argv[1:4]
CACHE_BUDGET_MIB = 32  # vdiskfs's default cache (what covers the chain, at most 32 MiB)
RSS_RUN_BUDGET_MIB = 16  # --cache-size of the 64 GiB random-write RSS run
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
# workload, tool, run, verdict[, image] (results before the writes of issue 16 have no image: qcow2)
checks = [{"workload": c[0], "tool": c[1], "run": int(c[2]), "qemu_img_check": c[3],
           "image": c[4] if len(c) > 4 else "qcow2"} for c in rows("checks.tsv")]

workloads = []
for w in ["seq_read_warm", "seq_reread_warm", "seq_read_cold", "seq_read_cold_mounted", "rand_read_1j",
          "rand_read_4j", "mount_ms", "write_alloc_rand_1j", "write_alloc_rand_4j", "write_empty_rand_1j",
          "write_empty_rand_4j", "write_empty_seq", "write_rss_64g"]:
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
        peers = {t: s["median"] for t, s in tools.items() if t in PEERS}
        if peers:
            best = (min if w == "mount_ms" else max)(peers, key=peers.get)
        else:
            best = None

        def ratios(tool):
            v = tools.get(tool, {}).get("median")
            return {
                "vs_qsd": speedup(w, v, peers.get("qsd")),
                "vs_best_peer": speedup(w, v, peers.get(best)) if best else None,
                "vs_raw": speedup(w, v, tools.get("raw", {}).get("median")),
                # FUSECeiling: a minimal libfuse server over the raw file (no format); not a peer.
                "vs_ceiling": speedup(w, v, tools.get("ceiling", {}).get("median")),
            }

        entry = {
            "workload": w, "image": image, "unit": units.get(w, ""), "tools": tools,
            "rss_mib": {t: round(rss[(w, image, t)] / 1024, 1) for t in tools if rss[(w, image, t)]},
            "best_peer": best,
            **ratios("vdiskfs"),
            # The default (read-write) mount against -o ro on the same image.
            "rw_vs_ro": speedup(w, tools.get("vdiskfs", {}).get("median"), tools.get("vdiskfs-ro", {}).get("median")),
            "ro": ratios("vdiskfs-ro") if "vdiskfs-ro" in tools else None,
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
    # Issue 6's floors, for the default mount and (where measured) for -o ro.
    modes = [("default mount", e)] + ([("-o ro", e["ro"])] if e["ro"] else [])
    if w in ("seq_read_warm", "rand_read_1j", "rand_read_4j"):
        q_limit = {"seq_read_warm": 2.0, "rand_read_1j": 1.5, "rand_read_4j": 2.0}[w]
        p_limit = {"seq_read_warm": 1.1, "rand_read_1j": 1.0, "rand_read_4j": 1.2}[w]
        if img == "qcow2c":
            q_limit = 1.5
        for mode, r in modes:
            floor(f"{w} {img} vs qsd ({mode})", r["vs_qsd"], q_limit)
            floor(f"{w} {img} vs best peer ({e['best_peer']}) ({mode})", r["vs_best_peer"], p_limit)
    elif w == "write_rss_64g":
        pass
    elif w.startswith("write_"):
        # Issue 15: allocated 4-job qcow2 writes at 2.5x; every other write workload (issue 6 for
        # qcow2, issue 16 for vmdk, vhdx, vpc and vdi) at 1.5x.
        floor(f"{w} {img} vs qsd", e["vs_qsd"], 2.5 if (w, img) == ("write_alloc_rand_4j", "qcow2") else 1.5)
    elif w == "mount_ms":
        for tool in ("vdiskfs", "vdiskfs-ro"):
            v = e["tools"].get(tool)
            if v:
                floor(f"mount latency {img} (max ms, {tool})", v["max"], 200, higher=False)
    # Issue 15: the default mount of qcow2 beside -o ro, and cold reads against the peers.
    if img == "qcow2" and w in ("seq_read_warm", "seq_reread_warm", "seq_read_cold", "seq_read_cold_mounted",
                                "rand_read_1j", "rand_read_4j"):
        floor(f"{w} {img} default mount vs -o ro", e["rw_vs_ro"], 0.95)
    if img == "qcow2" and w in ("seq_read_cold", "seq_read_cold_mounted"):
        floor(f"{w} {img} default mount vs best peer ({e['best_peer']})", e["vs_best_peer"], 1.1)
max_rss = max((kib for (w, img, t), kib in rss.items() if t.startswith("vdiskfs") and w != "write_rss_64g"),
              default=0)
if max_rss:
    floor("vdiskfs peak RSS, MiB (max over all workloads but the 64 GiB run)", max_rss / 1024, CACHE_BUDGET_MIB + 64,
          higher=False)
rss_run = rss.get(("write_rss_64g", "qcow2", "vdiskfs"), 0)
if rss_run:
    floor(f"vdiskfs peak RSS, MiB, 64 GiB qcow2 (4 KiB clusters), --cache-size {RSS_RUN_BUDGET_MIB}M, 4-job 4 KiB "
          "random writes", rss_run / 1024, RSS_RUN_BUDGET_MIB + 64, higher=False)
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
    "seq_reread_warm": "Sequential re-read on the same mount, dd bs=1M (the mount's own page cache)",
    "seq_read_cold": "Sequential read, dd bs=1M, host cache cold (drop_caches, then mount)",
    "seq_read_cold_mounted": "Sequential read, dd bs=1M, host cache cold (mount, then drop_caches)",
    "rand_read_1j": "4 KiB random read, fio psync direct=1, numjobs=1",
    "rand_read_4j": "4 KiB random read, fio psync direct=1, numjobs=4",
    "mount_ms": "Mount latency: exec to a readable file (ms, lower is better; ratio = other / vdiskfs)",
    "write_alloc_rand_1j": "4 KiB random write, fully allocated image, numjobs=1",
    "write_alloc_rand_4j": "4 KiB random write, fully allocated image, numjobs=4",
    "write_empty_rand_1j": "4 KiB random write, empty image (allocating), numjobs=1",
    "write_empty_rand_4j": "4 KiB random write, empty image (allocating), numjobs=4",
    "write_empty_seq": "1 MiB sequential write, empty image (allocating)",
    "write_rss_64g": "qcow2 4 KiB random write, numjobs=4, empty 64 GiB image with 4 KiB clusters, --cache-size 16M "
                     "(the RSS run)",
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
if meta.get("prefault") == "1":
    md.append("Memory prefaulted before every timed sequential read (see `bench.sh`: free page reporting).  ")
if meta.get("note"):
    md.append(f"Note: {meta['note']}  ")
md += ["", "*vdiskfs* is the default mount (`vdiskfs IMAGE MNT`: read-write where the format can be written), "
       "*vdiskfs -o ro* the same image mounted read-only. Ratios are the default mount's speedup (> 1 = vdiskfs "
       "better); *peer* = the best of qemu-storage-daemon and the libyal tool that reads the format correctly; "
       "*default ÷ ro* compares the two vdiskfs mounts. Cells: median (min–max).", ""]
md += ["## Correctness of the views (vs `qemu-img convert -O raw`)", "", "| image | tool | content |", "|---|---|---|"]
md += [f"| {c['image']} | {c['tool']} | {c['verdict']} |" for c in correct]
for w in workloads:
    md += ["", f"## {TITLES.get(w, w)} [{units.get(w, '')}]", ""]
    md += ["| image | vdiskfs | vdiskfs -o ro | qemu-storage-daemon | libyal | raw file | ÷ qsd | ÷ best peer | ÷ raw "
           "| default ÷ ro |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for e in (e for e in summary if e["workload"] == w):
        t = e["tools"]
        yal = next((n for n in t if n in PEERS and n != "qsd"), None)
        md.append(f"| {e['image']} | {cell(t.get('vdiskfs'))} | {cell(t.get('vdiskfs-ro'))} | {cell(t.get('qsd'))} | "
                  f"{(yal + ' ' + cell(t[yal])) if yal else '–'} | {cell(t.get('raw'))} | {r(e['vs_qsd'])} | "
                  f"{r(e['vs_best_peer'])}{' (' + e['best_peer'] + ')' if e['best_peer'] else ''} | {r(e['vs_raw'])} | "
                  f"{r(e['rw_vs_ro'])} |")
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
       "| workload | image | vdiskfs | vdiskfs -o ro | qemu-storage-daemon | libyal |", "|---|---|---|---|---|---|"]
for e in summary:
    if not e["rss_mib"]:
        continue
    m = e["rss_mib"]
    yal = next((f"{n} {m[n]}" for n in m if n in PEERS and n != "qsd"), "–")
    md.append(f"| {e['workload']} | {e['image']} | {m.get('vdiskfs', '–')} | {m.get('vdiskfs-ro', '–')} | "
              f"{m.get('qsd', '–')} | {yal} |")
if checks:
    md += ["", "## QEMU's verdict after each write run (qemu-img check; vpc: qemu-img convert)", "",
           f"{len(checks) - len(failed_checks)} clean, {len(failed_checks)} failed"
           + (": " + ", ".join(f"{c['image']} {c['workload']}/{c['tool']}/run {c['run']}" for c in failed_checks) if failed_checks else ""),
           ]
if "callgrind_instructions" in meta:
    md += ["", "## Instruction count (callgrind, fixed workload: HotPathCallgrind)", "",
           f"{meta['callgrind_instructions']} instructions (checksum {meta.get('callgrind_checksum', '?')}): "
           "22,000 warm `LayerChain.status` lookups, 5,000 4 KiB reads of a 64 MiB qcow2, 200 64 KiB compressed-cluster "
           "decodes, 50,000 `TableCache` get/put; image open included."]
md += ["", "## Floors of issues 6, 15 and 16", "", "| floor | value | limit | holds |", "|---|---|---|---|"]
md += [f"| {f['floor']} | {f['value']} | {f['limit']} | {'yes' if f['holds'] else '**no**'} |" for f in floors]
with open(out + ".md", "w") as f:
    f.write("\n".join(md) + "\n")
