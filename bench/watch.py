#!/usr/bin/env python3
"""Continuous protection, measured: `rewind agent` with `schedule = "watch"`
over a tree of many files.

    python3 bench/watch.py [--files 100000] [--work /tmp/rw-watch] [--rewind target/release/rewind]

Prints: the time to set up the watches, the agent's CPU and memory while it
watches an idle tree (60 s), and for five saves the time from the file
written to the snapshot that holds it (settle 2 s, min_interval 10 s: the
floor is the settle time plus the backup).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--files", type=int, default=100_000)
ap.add_argument("--work", default="/tmp/rw-watch")
ap.add_argument("--rewind", default="target/release/rewind")
ap.add_argument("--idle", type=int, default=60)
a = ap.parse_args()
rewind = os.path.abspath(a.rewind)

shutil.rmtree(a.work, ignore_errors=True)
tree = os.path.join(a.work, "tree")
per_dir = 100
t0 = time.time()
for d in range(a.files // per_dir):
    sub = os.path.join(tree, f"d{d // 100:03}", f"e{d % 100:02}")
    os.makedirs(sub)
    for f in range(per_dir):
        with open(os.path.join(sub, f"f{f:03}.txt"), "w") as fh:
            fh.write(f"file {d}/{f}\n" * (1 + (d * 7 + f) % 40))
dirs = sum(1 for _ in os.walk(tree))
print(f"tree: {a.files} files in {dirs} folders, made in {time.time() - t0:.1f} s")

env = dict(os.environ, XDG_STATE_HOME=os.path.join(a.work, "state"),
           XDG_CONFIG_HOME=os.path.join(a.work, "cfg"), XDG_CACHE_HOME=os.path.join(a.work, "cache"),
           REWIND_PASSWORD="bench")
for k in ("REWIND_REPOSITORY", "REWIND_PASSWORD_FILE"):
    env.pop(k, None)
repo = os.path.join(a.work, "repo")
subprocess.run([rewind, "-r", repo, "init"], env=env, check=True, capture_output=True)
with open(os.path.join(a.work, "password"), "w") as f:
    f.write("bench")
cfg = os.path.join(a.work, "rewind.toml")
with open(cfg, "w") as f:
    f.write(f'[jobs.tree]\nrepository = "{repo}"\npassword_file = "{a.work}/password"\n'
            f'paths = ["{tree}"]\nschedule = "watch"\nmin_interval = "10s"\nsettle = "2s"\nforget = false\n')

started = time.time()
agent = subprocess.Popen([rewind, "--config", cfg, "agent"], env=env, stderr=subprocess.PIPE, text=True)
lines = []
cond = threading.Condition()


def reader():
    for line in agent.stderr:
        with cond:
            lines.append((time.time(), line.rstrip()))
            cond.notify_all()


threading.Thread(target=reader, daemon=True).start()


def wait_for(pattern, after, timeout=600):
    end = time.time() + timeout
    with cond:
        while time.time() < end:
            for t, l in lines:
                if t >= after and re.search(pattern, l):
                    return t, l
            cond.wait(0.2)
    sys.exit(f"no {pattern!r} in {timeout} s; log:\n" + "\n".join(l for _, l in lines[-20:]))


t_watch, _ = wait_for(r"watching 1 path", started)
print(f"watches set up in {t_watch - started:.2f} s")
t_first, l = wait_for(r"backup: success", started)
print(f"first backup done {t_first - started:.1f} s after start: {l.split(': ', 1)[1]}")


def cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    ticks = int(parts[11]) + int(parts[12])
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return ticks, rss


time.sleep(3)
hz = os.sysconf("SC_CLK_TCK")
c0, _ = cpu_rss(agent.pid)
w0 = time.time()
peak = 0
while time.time() - w0 < a.idle:
    time.sleep(1)
    peak = max(peak, cpu_rss(agent.pid)[1])
c1, rss = cpu_rss(agent.pid)
print(f"idle for {a.idle} s while watching: CPU {100.0 * (c1 - c0) / hz / (time.time() - w0):.2f} % of one core, "
      f"RSS {rss / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB)")

lat = []
for i in range(5):
    time.sleep(11)
    saved = time.time()
    with open(os.path.join(tree, "d000", "e00", f"saved-{i}.txt"), "w") as f:
        f.write(f"saved by a person {i}\n")
    t, l = wait_for(r"backup: success", saved)
    lat.append(t - saved)
    print(f"save {i + 1}: in a snapshot {t - saved:.2f} s later ({l.split(': ', 1)[1]})")
lat.sort()
print(f"file saved -> snapshot: median {lat[2]:.2f} s, min {lat[0]:.2f} s, max {lat[-1]:.2f} s "
      f"(settle 2 s, min_interval 10 s)")
agent.terminate()
agent.wait(timeout=60)
