#!/usr/bin/env python3
"""How fast the web UI's pages answer on a local repository of 50k files.

    python3 bench/ui_pages.py [--work /tmp/rw-ui] [--rewind target/release/rewind] [--files 50000] [--big 100000]

Makes a tree of FILES small files in folders of 100 and one folder of BIG
empty files, backs it up five times (a few files changed between backups),
starts `rewind ui`, logs in with the printed token and times each page
(the median of 5 requests after one warm-up, and the first, cold one):
the timeline, a folder of 100, the BIG folder's first and last page, every
version of one file, a search, the changes between two snapshots.
The issue's target is under 300 ms a page.
"""

import argparse
import http.cookiejar
import os
import shutil
import statistics
import subprocess
import time
import urllib.parse
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--work", default="/tmp/rw-ui")
ap.add_argument("--rewind", default="target/release/rewind")
ap.add_argument("--files", type=int, default=50_000)
ap.add_argument("--big", type=int, default=100_000)
a = ap.parse_args()
rewind = os.path.abspath(a.rewind)

shutil.rmtree(a.work, ignore_errors=True)
src = os.path.join(a.work, "src")
tree = os.path.join(src, "tree")
for d in range(a.files // 100):
    sub = os.path.join(tree, f"d{d // 50:03}", f"e{d % 50:02}")
    os.makedirs(sub)
    for f in range(100):
        with open(os.path.join(sub, f"f{f:03}.txt"), "w") as fh:
            fh.write(f"file {d}/{f}\n" * (1 + (d + f) % 30))
big = os.path.join(src, "big")
os.makedirs(big)
for i in range(a.big):
    open(os.path.join(big, f"entry{i:06}"), "w").close()

env = dict(os.environ, REWIND_REPOSITORY=os.path.join(a.work, "repo"), REWIND_PASSWORD="bench")
subprocess.run([rewind, "init", "-q"], env=env, check=True)
for i in range(5):
    with open(os.path.join(tree, "d000", "e00", "f000.txt"), "a") as fh:
        fh.write(f"change {i}\n")
    t = time.time()
    subprocess.run([rewind, "backup", "-q", src], env=env, check=True)
    print(f"backup {i + 1}: {time.time() - t:.2f} s")
    time.sleep(1.1)

ui = subprocess.Popen([rewind, "ui"], env=env, stdout=subprocess.PIPE, text=True)
try:
    line = ui.stdout.readline().strip()
    login = line.split("open ", 1)[1]
    base = login.split("/login")[0]
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(login).read()
    snaps = subprocess.run([rewind, "--json", "snapshots"], env=env, capture_output=True, text=True, check=True)
    import json

    ids = [s["id"] for s in json.loads(snaps.stdout)]
    q = lambda p: urllib.parse.quote(p, safe="/")
    pages = [
        ("timeline", "/"),
        ("folder of 100", f"/snapshot/{ids[-1]}?path={q(os.path.join(tree, 'd001', 'e07'))}"),
        (f"folder of {a.big}, page 1", f"/snapshot/{ids[-1]}?path={q(big)}"),
        (f"folder of {a.big}, last page", f"/snapshot/{ids[-1]}?path={q(big)}&page=100000"),
        ("versions of a file (5 snapshots)", f"/versions?snap={ids[-1]}&path={q(os.path.join(tree, 'd000', 'e00', 'f000.txt'))}"),
        ("search 'f042' (500 paths in 5 snapshots)", "/search?q=f042"),
        ("changes between two snapshots", f"/diff?a={ids[-2]}&b={ids[-1]}"),
    ]
    print(f"{'page':44} {'first':>9} {'median':>9}")
    for name, path in pages:
        times = []
        for _ in range(6):
            t = time.perf_counter()
            with opener.open(base + path) as r:
                body = r.read()
                assert r.status == 200, (path, r.status)
            times.append(time.perf_counter() - t)
        print(f"{name:44} {times[0] * 1000:7.0f} ms {statistics.median(times[1:]) * 1000:7.0f} ms  ({len(body) // 1024} KiB)")
    rss = 0
    with open(f"/proc/{ui.pid}/status") as fh:
        for l in fh:
            if l.startswith("VmHWM:"):
                rss = int(l.split()[1]) // 1024
    print(f"rewind ui peak RSS: {rss} MiB")
finally:
    ui.terminate()
    ui.wait()
