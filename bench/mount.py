#!/usr/bin/env python3
"""`rewind mount` beside `restic mount`, on the same data, one run each.

    python3 bench/mount.py [--work /tmp/rw-mount] [--rewind target/release/rewind] [--files 50000]

Makes a tree of FILES small files and one 1 GiB file of random bytes, backs
it up with both tools, mounts each snapshot and measures: `ls -lR` of the
tree (first listing after the mount), a sequential read of the 1 GiB file,
2,000 random 4 KiB reads of it, and the mount process's peak RSS. Needs
root, /dev/fuse, fusermount3 (rewind) and fusermount (restic).
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import time

ap = argparse.ArgumentParser()
ap.add_argument("--work", default="/tmp/rw-mount")
ap.add_argument("--rewind", default="target/release/rewind")
ap.add_argument("--restic", default=shutil.which("restic") or "restic")
ap.add_argument("--files", type=int, default=50_000)
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
big = os.path.join(src, "big.bin")
with open(big, "wb") as fh:
    for _ in range(1024):
        fh.write(os.urandom(1 << 20))
print(f"data: {a.files} files and a 1 GiB file under {src}")

env = dict(os.environ, REWIND_PASSWORD="bench", RESTIC_PASSWORD="bench",
           XDG_CACHE_HOME=os.path.join(a.work, "cache"))
for k in ("REWIND_REPOSITORY", "REWIND_PASSWORD_FILE", "RESTIC_REPOSITORY"):
    env.pop(k, None)
rw_repo = os.path.join(a.work, "rewind-repo")
rs_repo = os.path.join(a.work, "restic-repo")
subprocess.run([rewind, "-r", rw_repo, "init"], env=env, check=True, capture_output=True)
subprocess.run([rewind, "-r", rw_repo, "-q", "backup", src], env=env, check=True)
subprocess.run([a.restic, "-r", rs_repo, "init"], env=env, check=True, capture_output=True)
subprocess.run([a.restic, "-r", rs_repo, "-q", "backup", src], env=env, check=True)


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def peak_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(name, cmd, root_of):
    mp = os.path.join(a.work, f"mnt-{name}")
    os.makedirs(mp)
    drop_caches()
    p = subprocess.Popen(cmd + [mp], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not os.path.isdir(os.path.join(mp, "snapshots")) or not os.listdir(os.path.join(mp, "snapshots")):
        if time.time() - t0 > 60:
            raise SystemExit(f"{name}: the mount did not come up")
        time.sleep(0.05)
    root = root_of(mp)
    r = {"mount": time.time() - t0}
    t = time.time()
    subprocess.run(["ls", "-lR", os.path.join(root, tree.lstrip("/"))], stdout=subprocess.DEVNULL, check=True)
    r["ls -lR"] = time.time() - t
    path = os.path.join(root, big.lstrip("/"))
    t = time.time()
    with open(path, "rb") as fh:
        while fh.read(1 << 20):
            pass
    r["read 1 GiB"] = time.time() - t
    rnd = random.Random(7)
    t = time.time()
    with open(path, "rb") as fh:
        for _ in range(2000):
            fh.seek(rnd.randrange(0, (1 << 30) - 4096))
            fh.read(4096)
    r["2000 random 4 KiB"] = time.time() - t
    r["peak RSS MiB"] = peak_rss(p.pid)
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        subprocess.run(["fusermount", "-u", "-z", mp])
        p.kill()
    subprocess.run(["fusermount3", "-u", "-z", mp], capture_output=True)
    return r


rw = measure("rewind", [rewind, "-r", rw_repo, "mount"], lambda mp: os.path.join(mp, "latest"))
rs = measure("restic", [a.restic, "-r", rs_repo, "mount"], lambda mp: os.path.join(mp, "snapshots", "latest"))
print(f"{'':22} {'rewind':>10} {'restic':>10} {'rewind/restic':>14}")
for k in rw:
    ratio = rw[k] / rs[k] if rs[k] else float("nan")
    unit = "" if "MiB" in k else " s"
    print(f"{k:22} {rw[k]:>8.2f}{unit:2} {rs[k]:>8.2f}{unit:2} {ratio:>13.2f}x")
