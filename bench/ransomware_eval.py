#!/usr/bin/env python3
"""Evaluates rewind's ransomware detection: attacks against normal work.

    bench/ransomware_eval.py [--rewind target/release/rewind] [--work /tmp/rw-eval]
                             [--profile small] [--csv OUT.csv]

Generates a dataset with ../shared/bench/make_dataset.py (profile `small`:
about 2,000 files, 200 MB), backs it up once, then for every scenario starts
from that pristine state (data and repository copied), applies the scenario,
backs up again and records whether rewind marked the snapshot suspicious
(exit code 4, `scan.verdict` in the JSON summary).

Attacks: make_dataset's `ransomware` (NAME.locked, original removed), and
variants in place (whole file, the first 4 KiB only, every other 4 KiB
block), renamed to a random name, with ransom notes, spread over the tree
or in one folder, touching 5 %, 30 % and 100 % of the files. Normal work:
make_dataset's `mutate` (several seeds, 1 % and 30 %), appends to logs, a
software build and rebuild, adding many zip/jpeg/mp4 files, moving and
renaming a large folder, deleting a folder, `git gc`, a package upgrade,
gzip of logs in place, adding encrypted `.gpg` archives, re-encoding
photos.

Prints a table and writes one CSV row per scenario.
"""
import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
MAKE = os.path.join(HERE, "..", "..", "shared", "bench", "make_dataset.py")
BLOCK = 4096


def files_under(d):
    out = []
    for root, _, names in os.walk(d):
        for n in names:
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    out.sort()
    return out


def keystream(seed, n):
    r = random.Random(seed)
    return r.randbytes(n)


def xor(data, key):
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(len(data), "little")


def pick(d, fraction, seed, folder=None):
    fs = files_under(os.path.join(d, folder) if folder else d)
    r = random.Random(seed)
    n = max(1, round(len(fs) * fraction))
    return r.sample(fs, min(n, len(fs)))


# ----------------------------------------------------------------- attacks

def encrypt_file(p, mode, seed):
    with open(p, "rb") as f:
        data = f.read()
    key = keystream(f"{seed}-{p}", len(data))
    if mode == "whole":
        out = xor(data, key)
    elif mode == "head":
        n = min(BLOCK, len(data))
        out = xor(data[:n], key[:n]) + data[n:]
    elif mode == "alternate":
        parts = []
        for i in range(0, len(data), BLOCK):
            chunk = data[i:i + BLOCK]
            parts.append(xor(chunk, key[i:i + len(chunk)]) if (i // BLOCK) % 2 == 0 else chunk)
        out = b"".join(parts)
    else:
        raise ValueError(mode)
    return out


def attack(mode, rename, fraction, folder=None, notes=False):
    def run(d, seed):
        picked = pick(d, fraction, f"attack-{seed}", folder)
        dirs = set()
        for i, p in enumerate(picked):
            out = encrypt_file(p, mode, seed)
            st = os.stat(p)
            if rename == "none":
                with open(p, "wb") as f:
                    f.write(out)
            else:
                newp = p + ".locked" if rename == "ext" else os.path.join(
                    os.path.dirname(p), hashlib.sha1(p.encode()).hexdigest()[:16] + ".crypt")
                with open(newp, "wb") as f:
                    f.write(out)
                os.unlink(p)
            dirs.add(os.path.dirname(p))
        if notes:
            for dd in sorted(dirs):
                with open(os.path.join(dd, "HOW_TO_DECRYPT_FILES.txt"), "w") as f:
                    f.write("Your files are encrypted. Send 1 BTC to ... with ID 4242.\n")
        return len(picked)
    return run


def make_dataset_ransomware(fraction):
    def run(d, seed):
        subprocess.run([sys.executable, MAKE, "ransomware", d, "--seed", str(seed), "--fraction", str(fraction)],
                       check=True, stdout=subprocess.DEVNULL)
        return round(len(files_under(d)) * fraction)
    return run


# ------------------------------------------------------------ normal work

def mutate(fraction, seed):
    def run(d, _seed):
        subprocess.run([sys.executable, MAKE, "mutate", d, "--seed", str(seed), "--fraction", str(fraction)],
                       check=True, stdout=subprocess.DEVNULL)
        return 0
    return run


def appends(d, seed):
    r = random.Random(seed)
    for p in files_under(d):
        if p.endswith((".log", ".md", ".txt", ".csv")):
            with open(p, "a") as f:
                f.write("".join(f"{time.time()} line {r.random()} ok\n" for _ in range(50)))
    return 0


def pseudo_binary(r, n):
    # Compressible like real object code: repeated opcodes, tables, strings.
    words = [r.randbytes(4) for _ in range(64)]
    out = bytearray(b"\x7fELF\x02\x01\x01\x00" + bytes(8))
    while len(out) < n:
        out += r.choice(words) if r.random() < 0.8 else b"\x00" * 8
    return bytes(out[:n])


def build(d, seed):
    r = random.Random(seed)
    b = os.path.join(d, "projects", "build")
    os.makedirs(b, exist_ok=True)
    for i in range(300):
        with open(os.path.join(b, f"unit{i}.o"), "wb") as f:
            f.write(pseudo_binary(r, r.randint(2_000, 200_000)))
    with open(os.path.join(b, "app"), "wb") as f:
        f.write(pseudo_binary(r, 3_000_000))
    return 0


def rebuild(d, seed):
    """Objects that existed before are rebuilt (modified, still binaries)."""
    build(d, seed + 1)
    return 0


def add_media(d, seed):
    r = random.Random(seed)
    m = os.path.join(d, "media", "import")
    os.makedirs(m, exist_ok=True)
    docs = files_under(os.path.join(d, "projects"))[:200]
    for i in range(150):
        with zipfile.ZipFile(os.path.join(m, f"archive{i}.zip"), "w", zipfile.ZIP_DEFLATED) as z:
            for p in docs[i % 50: i % 50 + 4]:
                z.write(p, os.path.basename(p))
        with open(os.path.join(m, f"photo{i}.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + r.randbytes(r.randint(50_000, 400_000)))
    for i in range(20):
        with open(os.path.join(m, f"clip{i}.mp4"), "wb") as f:
            f.write(b"\x00\x00\x00\x20ftypisom" + r.randbytes(r.randint(500_000, 3_000_000)))
    return 0


def move_folder(d, _seed):
    os.rename(os.path.join(d, "projects"), os.path.join(d, "projects-2026"))
    return 0


def rename_many(d, _seed):
    # A bulk rename that keeps content: every .md becomes .markdown.
    for p in files_under(d):
        if p.endswith(".md"):
            os.rename(p, p[:-3] + ".markdown")
    return 0


def delete_folder(d, _seed):
    shutil.rmtree(os.path.join(d, "documents"))
    return 0


def git_repo(d, seed):
    """Before: a git repository with loose objects (applied to the baseline)."""
    proj = os.path.join(d, "projects")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "init", "-q", proj], check=True, env=env)
    subprocess.run(["git", "-C", proj, "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", proj, "commit", "-qm", "x"], check=True, env=env)


def git_gc(d, _seed):
    proj = os.path.join(d, "projects")
    subprocess.run(["git", "-C", proj, "gc", "-q", "--aggressive"], check=True)
    return 0


def packages_before(d, seed):
    r = random.Random(seed)
    lib = os.path.join(d, "usr-lib")
    os.makedirs(lib, exist_ok=True)
    for i in range(120):
        with open(os.path.join(lib, f"libthing{i}.so.1"), "wb") as f:
            f.write(pseudo_binary(r, r.randint(20_000, 600_000)))


def package_upgrade(d, seed):
    r = random.Random(seed + 7)
    lib = os.path.join(d, "usr-lib")
    for i in range(120):
        p = os.path.join(lib, f"libthing{i}.so.1")
        if i % 10 == 0:
            os.unlink(p)
            p = os.path.join(lib, f"libthing{i}.so.2")
        with open(p, "wb") as f:
            f.write(pseudo_binary(r, r.randint(20_000, 600_000)))
    return 0


def gzip_logs(d, _seed):
    for p in files_under(d):
        if p.endswith((".log", ".csv", ".json")):
            with open(p, "rb") as fi, gzip.open(p + ".gz", "wb") as fo:
                fo.write(fi.read())
            os.unlink(p)
    return 0


def add_encrypted_archives(d, seed):
    r = random.Random(seed)
    out = os.path.join(d, "backups-gpg")
    os.makedirs(out, exist_ok=True)
    for i in range(100):
        with open(os.path.join(out, f"export{i}.tar.gpg"), "wb") as f:
            f.write(b"\x85\x02\x0c" + r.randbytes(r.randint(10_000, 500_000)))
    return 0


def photos_before(d, seed):
    r = random.Random(seed)
    ph = os.path.join(d, "photos")
    os.makedirs(ph, exist_ok=True)
    for i in range(100):
        with open(os.path.join(ph, f"img{i}.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + r.randbytes(r.randint(50_000, 300_000)))


def reencode_photos(d, seed):
    r = random.Random(seed + 3)
    for p in files_under(os.path.join(d, "photos")):
        with open(p, "wb") as f:
            f.write(b"\xff\xd8\xff\xe1\x00\x10Exif\x00" + r.randbytes(r.randint(50_000, 300_000)))
    return 0


# ----------------------------------------------------------------- runner

def scenarios():
    out = []
    for frac in (0.05, 0.30, 1.0):
        pct = f"{round(frac * 100)}%"
        out += [
            ("attack", f"make_dataset ransomware (.locked, original removed) {pct}", None, make_dataset_ransomware(frac)),
            ("attack", f"in place, whole file {pct}", None, attack("whole", "none", frac)),
            ("attack", f"in place, first 4 KiB only {pct}", None, attack("head", "none", frac)),
            ("attack", f"in place, every other 4 KiB block {pct}", None, attack("alternate", "none", frac)),
            ("attack", f"renamed to NAME.locked, first 4 KiB only {pct}", None, attack("head", "ext", frac)),
            ("attack", f"random new names (.crypt), whole file {pct}", None, attack("whole", "random", frac)),
            ("attack", f"in place + ransom notes {pct}", None, attack("whole", "none", frac, notes=True)),
        ]
    out += [
        ("attack", "one folder (documents/), in place, whole file", None, attack("whole", "none", 1.0, folder="documents")),
        ("attack", "one folder (projects/), renamed .locked", None, attack("whole", "ext", 1.0, folder="projects")),
    ]
    for seed in (2, 3, 4, 5, 6):
        out.append(("normal", f"make_dataset mutate 1% (seed {seed})", None, mutate(0.01, seed)))
    for seed in (7, 8):
        out.append(("normal", f"make_dataset mutate 30% (seed {seed})", None, mutate(0.30, seed)))
    out += [
        ("normal", "appends to every log/md/txt/csv", None, appends),
        ("normal", "software build (300 objects, a binary)", None, build),
        ("normal", "software rebuild (objects rewritten)", build, rebuild),
        ("normal", "add 150 zip, 150 jpeg, 20 mp4", None, add_media),
        ("normal", "move a large folder (projects/)", None, move_folder),
        ("normal", "rename every .md to .markdown", None, rename_many),
        ("normal", "delete a folder (documents/)", None, delete_folder),
        ("normal", "git gc --aggressive in a repository", git_repo, git_gc),
        ("normal", "package upgrade (120 shared libraries)", packages_before, package_upgrade),
        ("normal", "gzip logs, csv and json in place", None, gzip_logs),
        ("normal", "add 100 encrypted .tar.gpg exports", None, add_encrypted_archives),
        ("normal", "re-encode 100 photos", photos_before, reencode_photos),
    ]
    return out


def run(cmd, env, **kw):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rewind", default=os.path.join(HERE, "..", "target", "release", "rewind"))
    ap.add_argument("--work", default="/tmp/rw-eval")
    ap.add_argument("--profile", default="small")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--only", default=None, help="run scenarios whose name contains this")
    a = ap.parse_args()
    rewind = os.path.abspath(a.rewind)
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    pristine = os.path.join(work, "pristine")
    subprocess.run([sys.executable, MAKE, "generate", pristine, "--profile", a.profile], check=True,
                   stdout=subprocess.DEVNULL)
    env = dict(os.environ, REWIND_PASSWORD="eval", XDG_CONFIG_HOME=os.path.join(work, "cfg"),
               XDG_DATA_HOME=os.path.join(work, "xdg"), HOME=work)
    data = os.path.join(work, "data")
    repo = os.path.join(work, "repo")
    rows = []
    seed = 11
    for kind, name, before, apply in scenarios():
        if a.only and a.only not in name:
            continue
        seed += 1
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(repo, ignore_errors=True)
        subprocess.run(["cp", "-a", pristine, data], check=True)
        if before:
            before(data, seed)
        env["REWIND_REPOSITORY"] = repo
        r = run([rewind, "init", "-q"], env)
        assert r.returncode == 0, r.stderr
        r = run([rewind, "backup", "-q", data], env)
        assert r.returncode == 0, r.stderr
        files = len(files_under(data))
        touched = apply(data, seed)
        t0 = time.time()
        r = run([rewind, "--json", "backup", data], env)
        dt = time.time() - t0
        summary = [json.loads(l) for l in r.stdout.splitlines() if '"summary"' in l]
        scan = summary[-1].get("scan") if summary else None
        flagged = r.returncode == 4
        if r.returncode not in (0, 3, 4):
            print(r.stderr, file=sys.stderr)
        counts = (scan or {}).get("counts", {})
        reasons = "; ".join((scan or {}).get("reasons", [])[:2])
        rows.append({
            "kind": kind, "scenario": name, "files": files, "touched": touched,
            "flagged": flagged, "correct": flagged == (kind == "attack"),
            "suspects": counts.get("suspects", 0), "score": round((scan or {}).get("score", 0), 3),
            "backup_s": round(dt, 2), "reasons": reasons,
        })
        mark = "ok " if rows[-1]["correct"] else "XX "
        print(f"{mark}{kind:6} {'FLAG' if flagged else 'pass'} {name} (suspects {rows[-1]['suspects']}, "
              f"score {rows[-1]['score']}) {reasons}", flush=True)
    attacks = [x for x in rows if x["kind"] == "attack"]
    normal = [x for x in rows if x["kind"] == "normal"]
    if attacks:
        print(f"\ndetected {sum(x['flagged'] for x in attacks)}/{len(attacks)} attacks; "
              f"false alarms {sum(x['flagged'] for x in normal)}/{len(normal)} normal workloads")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
