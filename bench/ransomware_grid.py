#!/usr/bin/env python3
"""Ransomware detection on real trees: the grid of issue 14.

    bench/ransomware_grid.py [--rewind target/release/rewind] [--work /tmp/rw-grid]
                             [--trees synth,doc,python,git,office,mail] [--only SUBSTR]
                             [--quick] [--csv OUT.csv]

Every cell starts from a fresh copy of a pristine tree, applies its "before"
step if it has one, backs the tree up into a new repository (the baseline),
copies that repository (the twin), applies the attack or the normal work,
then backs up into the repository (scan on) and into the twin (`--no-scan`,
when `rewind backup --help` offers it; the order alternates from cell to
cell), and records the exit code (4: suspicious), the snapshot's `scan`
(verdict, score, reasons, every numeric field of `scan.counts`) and both
wall times (--timing-runs N: N times each, into copies of the repositories,
the fastest kept). A slow attack does this once per slice, a backup after
each.
Sources are never modified: /usr/share/doc, /usr/lib/python3* and /work/main
are copied (git: cloned), the rest is generated.

Trees (prepared once into WORK/trees/NAME, reused while WORK/trees/NAME.json
matches; --fresh-trees rebuilds). Copied trees take regular files only
(no symlinks), at most --max-files (4,000) files and --max-mb (200) MB, files
over 16 MB skipped, chosen by the SHA-1 of their relative path, so the
choice is the same on every run of the same machine:
  synth   make_dataset.py generate --profile small (about 2,000 files, 200 MB)
  doc     a copy of /usr/share/doc
  python  a copy of /usr/lib/python3 and /usr/lib/python3.11 (.py, .pyc, .so)
  git     `git clone --no-local /work/main` at --git-rev (default: a pinned
          commit, HEAD if that is absent), its pack unpacked into loose
          objects as in a working repository, with its .git
  office  generated in a venv under /tmp (--venv) with Pillow (JPEG photos,
          PNG screenshots), python-docx, openpyxl and reportlab (.docx,
          .xlsx, .pdf) plus text notes; if pip fails, a stdlib fallback
          (PNG by zlib, minimal .docx/.xlsx zips, minimal PDFs, no JPEG) and
          the output says so
  mail    about 3,000 .eml files made with Python's email library (text,
          HTML alternatives, attachments taken from /usr/share/doc)

Attack cells, on every tree (encryption: a keystream XOR written in place
with r+b, so only the encrypted regions change; empty files are skipped; the
share is of the tree's non-empty regular files, after a cell's "before"):
  A. modes x shares, in place, no note, mtime moved (what a write does):
     mode whole file | first 1 KiB | first 4 KiB | first 64 KiB |
          every other 64 KiB block (intermittent)
     x share 1 % | 5 % | 30 % | 100 %                          (20 cells)
  B. variations, each at 5 % and at 30 %:                      (22 cells)
     first 4 KiB, mtime put back (os.utime to the old atime/mtime)
     every other 64 KiB, mtime put back
     whole file, mtime put back
     first 4 KiB, renamed x -> x.locked
     whole file, renamed x -> x.locked, a ransom note in every folder touched
     first 4 KiB in place, a ransom note in every folder touched
     first 4 KiB, only office and image files (share of those files; only
       on trees with >= 20 of them: .docx .xlsx .pptx .odt .ods .odp .doc
       .xls .ppt .pdf .rtf .jpg .jpeg .png .gif .tif .tiff .bmp .webp)
     first 4 KiB, spread over 3 backups (the same total share, a slice per
       backup, a backup after each slice)
     first 4 KiB, spread over 10 backups
     first 4 KiB, mtime put back, spread over 10 backups
     first 4 KiB, mtime put back, spread over 3 backups
  (spread over 1 backup is grid A.) For a slow attack the row says after
  which backup it was first flagged and at what cumulative share, and
  whether that was by the backup at which the share first reached 5 %.

Normal work cells (must not alarm):
  synth   every normal scenario of bench/ransomware_eval.py (mutate 1 % x5
          seeds, 30 % x2, appends, build, rebuild, media import, folder
          move, bulk rename, folder delete, git gc, package upgrade, gzip
          logs, .gpg exports, photo re-encode)
  doc     log rotation, gzip in place (x.log -> x.log.gz) of 40 logs made
          by "before"; log rotation, logrotate style (x.log -> x.log.1.gz,
          x.log started again); a tar.gz of 800 /usr/include headers
          unpacked; the biggest folder renamed
  python  package upgrade: the tree's .so files and 150 real .so files from
          /usr/lib/x86_64-linux-gnu (added by "before") replaced by other
          real .so files (written to NAME.dpkg-new and renamed over, one in
          ten under a new soname); a build: python -m compileall -f
          (levels 0 and 1)
  git     git gc --aggressive --prune=now (the loose objects packed); a
          build directory: gcc -O2 -g of 24 C files, a static library and a
          binary
  office  a photo import (200 new JPEGs); a browser cache (800 random-looking
          entries made by "before": 300 evicted, 1,500 new, the index
          rewritten); a SQLite database changed in place (sqlite3: 30,000
          inserts, 20,000 updates, 5,000 deletes); a 96 MB VM image changed
          in place (6 % of its 4 KiB blocks rewritten, half random)
  mail    the biggest folder renamed

The full grid: 42 attack cells per tree (40 where fewer than 20 office or
image files), 32 normal ones: 276 cells, 12-16 minutes on this 2-core
machine once the trees are prepared (preparing them all, the office venv
included, takes a few minutes more, once). Trees as prepared here: synth
1,993 files / 199 MiB, doc 4,000 / 105 MiB, python 4,000 / 84 MiB, git
2,564 / 8 MiB (2,240 of them zlib-compressed loose objects), office 1,510 /
72 MiB, mail 3,080 / 27 MiB.

--quick runs only these cells, on doc, office and python (under a minute
with the trees prepared):
  doc     whole file 30 %; first 4 KiB 5 %; first 4 KiB 5 % mtime put back;
          every other 64 KiB 30 %; first 4 KiB 30 % over 3 backups;
          log rotation (gzip); archive unpacked
  office  first 4 KiB 30 %; first 4 KiB only office/image files 30 %;
          photo import; SQLite in place
  python  first 1 KiB 5 %; package upgrade

Output: a line per cell as it runs, then a Markdown table (tree, kind,
scenario, files touched, flagged (with the rules that fired, when the scan
stores `rules`), signals that fired = nonzero counts other than
files_before/modified/added/removed/moved/examined/suspects/accumulated,
suspects (and `accumulated` when present), backup time with scan / without)
and summary lines: detection over attacks of >= 5 % of the files (nominal
share; office/image-only attacks by the share of all files they touched),
false alarms over normal work, slow attacks flagged by the backup at which
they first touched 5 % (or their last backup if they never do), the scan's
share of backup time. --csv writes one row per cell: every count as a
column, every rule with its figure and threshold, `accumulated_from`,
per-backup steps, and the whole scan as JSON (suspect_keys as their number).
A slow attack's row shows the scan of its first flagged backup (else its
last).
"""
import argparse
import csv
import glob
import gzip
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no bench/__pycache__ in the work tree
import ransomware_eval as ev  # noqa: E402  (files_under, xor, make_dataset path, synth scenarios)

MAIN = os.path.abspath(os.path.join(HERE, ".."))
TREE_VERSION = {"mail": 4, "office": 2}  # bump a tree's number when its preparation changes (default 1)
ALL_TREES = ["synth", "doc", "python", "git", "office", "mail"]
QUICK_TREES = ["doc", "office", "python"]
GIT_PIN = "094ab7e48e25461c8afd4296906015636baa696e"  # the grid's git tree: /work/main at this commit (else HEAD)
KiB = 1024
MiB = 1024 * 1024
OFFICE_EXT = {".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp", ".doc", ".xls", ".ppt", ".pdf",
              ".rtf", ".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp"}
NOTE = "HOW_TO_DECRYPT_FILES.txt"
NOTE_TEXT = ("All your files are encrypted.\nTo recover them, write to decrypt@example.onion "
             "with your ID 4242-ABCD and pay 1 BTC.\nDo not rename or modify the files.\n")
# Counts that describe the change rather than suspect it (not listed as signals).
CONTEXT = {"files_before", "modified", "added", "removed", "moved", "examined", "suspects", "accumulated"}
MODES = [("whole", "whole file"), ("head1k", "first 1 KiB"), ("head4k", "first 4 KiB"),
         ("head64k", "first 64 KiB"), ("alt64k", "every other 64 KiB")]
MODE_NAME = dict(MODES)


def stable_int(*parts):
    return int.from_bytes(hashlib.sha1("\0".join(map(str, parts)).encode()).digest()[:8], "big")


def regular_files(d):
    return ev.files_under(d)


def git_env(work):
    return dict(os.environ, GIT_AUTHOR_NAME="grid", GIT_AUTHOR_EMAIL="grid@example.org",
                GIT_COMMITTER_NAME="grid", GIT_COMMITTER_EMAIL="grid@example.org",
                GIT_AUTHOR_DATE="2026-01-01T00:00:00Z", GIT_COMMITTER_DATE="2026-01-01T00:00:00Z",
                GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, HOME=work)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# ======================================================================= trees

def copy_sample(sources, dst, max_files, max_bytes, max_file=16 * MiB):
    """Copies regular files of SOURCES [(dir, prefix)] into DST: by SHA-1 of the
    relative path, while under the caps. Returns (files, bytes)."""
    cands = []
    for src, prefix in sources:
        for root, dirs, names in os.walk(src):
            dirs.sort()
            for n in names:
                p = os.path.join(root, n)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                rel = os.path.join(prefix, os.path.relpath(p, src))
                cands.append((hashlib.sha1(rel.encode()).digest(), rel, p))
    cands.sort()
    total = count = 0
    for _, rel, p in cands:
        size = os.path.getsize(p)
        if size > max_file or total + size > max_bytes:
            continue
        out = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copy2(p, out)
        os.chmod(out, 0o644)
        total += size
        count += 1
        if count >= max_files:
            break
    return count, total


def corpus_lines():
    """Real English text lines (licences, copyright files), deterministic."""
    paths = sorted(glob.glob("/usr/share/common-licenses/*"))
    paths += sorted(glob.glob("/usr/share/doc/*/copyright"))[:300]
    lines = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                for ln in f.read().decode("utf-8", "replace").splitlines():
                    ln = ln.strip()
                    if len(ln) > 20 and ln.count(" ") >= 4:  # prose, not file lists
                        lines.append(ln)
        except OSError:
            pass
    return lines or ["The quick brown fox jumps over the lazy dog."]


def set_times(paths, seed, start=1672531200, span=3 * 365 * 86400):
    """Old, deterministic mtimes (2023-2025) so that a write moves them."""
    r = random.Random(seed)
    for p in paths:
        t = start + r.randrange(span)
        os.utime(p, (t, t))


def prep_synth(dst, a):
    sh([sys.executable, ev.MAKE, "generate", dst, "--profile", "small"], stdout=subprocess.DEVNULL)
    return "make_dataset small"


def prep_doc(dst, a):
    copy_sample([("/usr/share/doc", "")], dst, a.max_files, a.max_mb * MiB)
    return "/usr/share/doc sample"


def prep_python(dst, a):
    srcs = [(p, os.path.basename(p)) for p in sorted(glob.glob("/usr/lib/python3*")) if os.path.isdir(p)]
    copy_sample(srcs, dst, a.max_files, a.max_mb * MiB)
    return "+".join(s for s, _ in srcs)


def prep_git(dst, a):
    env = git_env(a.work)
    repo = os.path.join(dst, "rewind")
    os.makedirs(dst)
    sh(["git", "clone", "-q", "--no-local", "--no-tags", "--single-branch", MAIN, repo], env=env)
    rev = a.git_rev
    if subprocess.run(["git", "-C", repo, "cat-file", "-e", rev + "^{commit}"], env=env,
                      capture_output=True).returncode != 0:
        rev = "HEAD"
    sh(["git", "-C", repo, "reset", "-q", "--hard", rev], env=env)
    sh(["git", "-C", repo, "remote", "remove", "origin"], env=env)
    sh(["git", "-C", repo, "reflog", "expire", "--expire=now", "--all"], env=env)
    sh(["git", "-C", repo, "-c", "pack.threads=1", "repack", "-q", "-a", "-d", "-f"], env=env)
    sh(["git", "-C", repo, "prune", "--expire=now"], env=env)
    # A working repository has loose objects: unpack the single pack.
    packs = glob.glob(os.path.join(repo, ".git", "objects", "pack", "*.pack"))
    for pk in packs:
        moved = pk + ".tmp"
        os.rename(pk, moved)
        os.unlink(pk[:-5] + ".idx")
        for extra in glob.glob(pk[:-5] + ".*"):
            if not extra.endswith(".tmp"):
                os.unlink(extra)
        with open(moved, "rb") as f:
            sh(["git", "-C", repo, "unpack-objects", "-q"], stdin=f, env=env)
        os.unlink(moved)
    head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], env=env, capture_output=True,
                          text=True).stdout.strip()
    return f"git clone of {MAIN} at {head[:12]}"


def ensure_venv(a):
    """A venv with Pillow, python-docx, openpyxl, reportlab; (python, note)."""
    py = os.path.join(a.venv, "bin", "python")
    probe = "import PIL, docx, openpyxl, reportlab"
    if os.path.exists(py) and subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
        return py, "Pillow, python-docx, openpyxl, reportlab"
    try:
        if not os.path.exists(py):
            sh([sys.executable, "-m", "venv", a.venv], capture_output=True)
        r = subprocess.run([py, "-m", "pip", "install", "-q", "pillow", "python-docx", "openpyxl",
                            "reportlab"], capture_output=True, text=True, timeout=900)
        if r.returncode == 0 and subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
            return py, "Pillow, python-docx, openpyxl, reportlab"
        err = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
    except Exception as e:  # noqa: BLE001
        err = [str(e)]
    note = f"FALLBACK: pip install failed ({err[0][:120]}); stdlib generators, no JPEG"
    print(f"office tree: {note}", file=sys.stderr)
    return sys.executable, note


def prep_office(dst, a):
    py, note = ensure_venv(a)
    sh([py, os.path.abspath(__file__), "--gen", "office", dst, "--gen-seed", "1"])
    return note


def prep_mail(dst, a):
    gen_mail(dst, 1)
    return "email library"


PREP = {"synth": prep_synth, "doc": prep_doc, "python": prep_python, "git": prep_git,
        "office": prep_office, "mail": prep_mail}


def tree_params(name, a):
    p = {"version": TREE_VERSION.get(name, 1), "tree": name}
    if name in ("doc", "python"):
        p.update(max_files=a.max_files, max_mb=a.max_mb)
    if name == "git":
        p["rev"] = a.git_rev
    return p


def prepare_tree(name, a):
    base = os.path.join(a.work, "trees")
    dst = os.path.join(base, name)
    stamp = dst + ".json"
    params = tree_params(name, a)
    if not a.fresh_trees and os.path.isdir(dst) and os.path.exists(stamp):
        with open(stamp) as f:
            st = json.load(f)
        if st.get("params") == params:
            return dst, st
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(base, exist_ok=True)
    t0 = time.time()
    note = PREP[name](dst, a)
    fs = regular_files(dst)
    st = {"params": params, "note": note, "files": len(fs),
          "bytes": sum(os.path.getsize(p) for p in fs), "prep_s": round(time.time() - t0, 1)}
    with open(stamp, "w") as f:
        json.dump(st, f)
    return dst, st


# ------------------------------------------------------------- generators

def gen_mail(out, seed, counts=None):
    from email.message import EmailMessage
    from email.utils import format_datetime
    import datetime
    r = random.Random(seed)
    lines = corpus_lines()
    pool = []
    for p in sorted(glob.glob("/usr/share/doc/**/*", recursive=True)):
        if p.endswith((".pdf", ".png", ".jpg", ".gz", ".html")) and os.path.isfile(p) \
                and not os.path.islink(p) and 2_000 < os.path.getsize(p) < 400_000:
            pool.append(p)
    pool = [p for _, p in sorted((hashlib.sha1(p.encode()).digest(), p) for p in pool)][:400]
    ctypes = {".pdf": ("application", "pdf"), ".png": ("image", "png"), ".jpg": ("image", "jpeg"),
              ".gz": ("application", "gzip"), ".html": ("text", "html")}
    people = [f"{a}.{b}@{d}" for a in ("anna", "ben", "chen", "dara", "emil", "fatima", "george", "hana")
              for b in ("smith", "ito", "novak", "okafor") for d in ("example.org", "example.com")]
    folders = counts or [("INBOX", 600), ("Sent", 400), ("Archive/2023", 450), ("Archive/2024", 700),
                         ("Archive/2025", 550), ("Lists/debian-devel", 200), ("Lists/python-dev", 150),
                         ("Drafts", 30)]
    written = []
    for folder, n in folders:
        d = os.path.join(out, "Mail", folder)
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            m = EmailMessage()
            frm, to = r.sample(people, 2)
            when = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc) + \
                datetime.timedelta(seconds=r.randrange(3 * 365 * 86400))
            m["From"], m["To"] = frm, to
            m["Subject"] = ("Re: " if r.random() < 0.4 else "") + r.choice(lines)[:60]
            m["Date"] = format_datetime(when)
            m["Message-ID"] = f"<{stable_int(seed, folder, i):016x}@example.org>"
            body = "\n".join(r.choice(lines) for _ in range(r.randint(3, 80)))
            body = f"Hi {to.split('.')[0].title()},\n\n{body}\n\n-- \n{frm}\n"
            m.set_content(body)
            if r.random() < 0.25:
                m.add_alternative("<html><body>" + "".join(f"<p>{ln}</p>" for ln in body.splitlines())
                                  + "</body></html>", subtype="html")
            if pool and r.random() < 0.12:
                ap = r.choice(pool)
                ext = os.path.splitext(ap)[1]
                with open(ap, "rb") as f:
                    m.add_attachment(f.read(), *ctypes[ext], filename=os.path.basename(ap))
            for k, part in enumerate(m.walk()):  # deterministic MIME boundaries
                if part.is_multipart():
                    part.set_boundary(f"=_{stable_int(seed, folder, i, k):016x}")
            p = os.path.join(d, f"{i + 1:05d}.eml")
            with open(p, "wb") as f:
                f.write(m.as_bytes())
            t = when.timestamp()
            os.utime(p, (t, t))
            written.append(p)
    return written


def _png_stdlib(w, h, r):
    raw = bytearray()
    colors = [bytes(r.randrange(256) for _ in range(3)) for _ in range(6)]
    for y in range(h):
        raw += b"\x00" + colors[(y // 40) % 6] * w
    def chunk(t, d):
        return len(d).to_bytes(4, "big") + t + d + zlib.crc32(t + d).to_bytes(4, "big")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + b"\x08\x02\0\0\0")
            + chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b""))


def _zip_doc(path, xml_name, xml):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        z.writestr(xml_name, xml)


def _pdf_stdlib(text):
    stream = zlib.compress(("BT /F1 10 Tf 50 800 Td " + " ".join(
        f"({ln[:90].replace('(', '').replace(')', '')}) Tj 0 -12 Td" for ln in text) + " ET").encode())
    objs = [b"<</Type/Catalog/Pages 2 0 R>>", b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
            b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]/Contents 4 0 R>>",
            b"<</Length %d/Filter/FlateDecode>>stream\n" % len(stream) + stream + b"\nendstream"]
    out = bytearray(b"%PDF-1.4\n")
    offs = []
    for i, o in enumerate(objs):
        offs.append(len(out))
        out += b"%d 0 obj\n" % (i + 1) + o + b"\nendobj\n"
    x = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offs)
    out += b"trailer<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, x)
    return bytes(out)


def make_photo(path, r, Image, ImageDraw, big=False):
    w, h = (1600, 1200) if big else r.choice([(1024, 768), (1200, 900), (800, 1066)])
    base = Image.linear_gradient("L").resize((w, h)).rotate(r.randrange(360))
    c1 = tuple(r.randrange(256) for _ in range(3))
    c2 = tuple(r.randrange(256) for _ in range(3))
    from PIL import ImageOps
    img = ImageOps.colorize(base, c1, c2)
    dr = ImageDraw.Draw(img)
    for _ in range(r.randint(5, 25)):
        x, y = r.randrange(w), r.randrange(h)
        s = r.randint(20, 300)
        dr.ellipse([x, y, x + s, y + s // 2 + 1], fill=tuple(r.randrange(256) for _ in range(3)))
    noise = Image.effect_noise((w, h), r.uniform(8, 30)).convert("RGB")
    img = Image.blend(img, noise, 0.15)
    img.save(path, "JPEG", quality=r.choice((80, 85, 90)))


def gen_photos(out, seed, count):
    """COUNT new JPEGs in OUT (a camera import). Needs Pillow."""
    from PIL import Image, ImageDraw
    r = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    for i in range(count):
        make_photo(os.path.join(out, f"IMG_{seed % 9000 + 1000}_{i:04d}.jpg"), r, Image, ImageDraw)


def gen_office(out, seed):
    r = random.Random(seed)
    lines = corpus_lines()
    try:
        from PIL import Image, ImageDraw
        import docx
        import openpyxl
        from reportlab.lib.pagesizes import A4
        from reportlab.pdfgen import canvas
        full = True
    except ImportError:
        full = False
    written = []
    projects = ["Budget 2025", "Client Acme", "Thesis", "House", "Travel", "Team reports", "Invoices"]

    def dest(*parts):
        p = os.path.join(out, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        written.append(p)
        return p

    # Photos.
    if full:
        for i in range(300):
            year = 2023 + i % 3
            make_photo(dest("Pictures", str(year), f"album{i % 12:02d}", f"IMG_{i:04d}.jpg"), r, Image, ImageDraw)
    # Screenshots: flat UI, text.
    for i in range(150):
        p = dest("Pictures", "Screenshots", f"Screenshot {i:03d}.png")
        if full:
            img = Image.new("RGB", (1280, 800), tuple(r.randrange(200, 256) for _ in range(3)))
            dr = ImageDraw.Draw(img)
            for _ in range(r.randint(5, 30)):
                x, y = r.randrange(1200), r.randrange(760)
                dr.rectangle([x, y, x + r.randint(20, 400), y + r.randint(10, 120)],
                             fill=tuple(r.randrange(256) for _ in range(3)))
            for k in range(r.randint(10, 40)):
                dr.text((20, 20 + k * 18), r.choice(lines)[:120], fill=(0, 0, 0))
            img.save(p, "PNG")
        else:
            with open(p, "wb") as f:
                f.write(_png_stdlib(640, 400, r))
    for i in range(320):
        proj = projects[i % len(projects)]
        p = dest("Documents", proj, f"report {i:03d}.docx")
        text = [r.choice(lines) for _ in range(r.randint(10, 120))]
        if full:
            d = docx.Document()
            d.add_heading(text[0][:60], 1)
            for k in range(0, len(text), 4):
                d.add_paragraph(" ".join(text[k:k + 4]))
            if r.random() < 0.3:
                t = d.add_table(rows=8, cols=4)
                for row in t.rows:
                    for cell in row.cells:
                        cell.text = str(r.randint(0, 99999))
            d.save(p)
        else:
            _zip_doc(p, "word/document.xml", "<w:document>" + "".join(f"<w:p>{t}</w:p>" for t in text) + "</w:document>")
    for i in range(220):
        proj = projects[i % len(projects)]
        p = dest("Documents", proj, f"sheet {i:03d}.xlsx")
        rows = r.randint(50, 2000)
        if full:
            wb = openpyxl.Workbook()
            ws = wb.active
            ws.append(["date", "item", "amount", "qty", "note"])
            for k in range(rows):
                ws.append([f"2025-{k % 12 + 1:02d}-{k % 28 + 1:02d}", r.choice(lines)[:20],
                           round(r.uniform(0, 5000), 2), r.randint(1, 50), r.choice(("ok", "late", "paid", ""))])
            wb.save(p)
        else:
            _zip_doc(p, "xl/worksheets/sheet1.xml", "<sheetData>" + "".join(
                f"<row><c><v>{r.randint(0, 9999)}</v></c></row>" for _ in range(rows)) + "</sheetData>")
    for i in range(220):
        proj = projects[i % len(projects)]
        p = dest("Documents", proj, f"document {i:03d}.pdf")
        if full:
            c = canvas.Canvas(p, pagesize=A4, pageCompression=1, invariant=1)
            for _page in range(r.randint(1, 8)):
                y = 800
                for _ in range(60):
                    c.drawString(40, y, r.choice(lines)[:100])
                    y -= 12
                if r.random() < 0.3:
                    for k in range(12):
                        c.rect(60 + k * 35, 60, 25, r.randint(10, 200), fill=1)
                c.showPage()
            c.save()
        else:
            with open(p, "wb") as f:
                f.write(_pdf_stdlib([r.choice(lines) for _ in range(60)]))
    for i in range(300):
        ext = r.choice((".txt", ".md", ".csv"))
        p = dest("Documents", "notes", f"note {i:03d}{ext}")
        with open(p, "w") as f:
            if ext == ".csv":
                f.write("".join(f"{k},{r.randint(0, 999)},{r.choice(lines)[:30]!r}\n" for k in range(r.randint(20, 3000))))
            else:
                f.write("\n".join(r.choice(lines) for _ in range(r.randint(5, 400))) + "\n")
    set_times(written, seed)
    return written


# ===================================================================== attacks

def encrypt_in_place(p, mode, key_seed):
    """XOR the regions MODE names with a keystream, writing only those regions."""
    size = os.path.getsize(p)
    if mode == "whole":
        regions = [(0, size)]
    elif mode in ("head1k", "head4k", "head64k"):
        regions = [(0, min(size, {"head1k": KiB, "head4k": 4 * KiB, "head64k": 64 * KiB}[mode]))]
    elif mode == "alt64k":
        regions = [(o, min(64 * KiB, size - o)) for o in range(0, size, 128 * KiB)]
    else:
        raise ValueError(mode)
    r = random.Random(key_seed)
    with open(p, "r+b") as f:
        for off, n in regions:
            f.seek(off)
            data = f.read(n)
            f.seek(off)
            f.write(ev.xor(data, r.randbytes(len(data))))


class Attack:
    """An attack of SHARE of the files in MODE, spread over SLICES backups."""

    def __init__(self, mode, share, slices=1, rename=False, notes=False, mtime_back=False, office_only=False):
        self.mode, self.share, self.slices = mode, share, slices
        self.rename, self.notes, self.mtime_back, self.office_only = rename, notes, mtime_back, office_only
        self.picked = None

    def candidates(self, d):
        fs = [p for p in regular_files(d) if os.path.getsize(p) > 0]
        if self.office_only:
            fs = [p for p in fs if os.path.splitext(p)[1].lower() in OFFICE_EXT]
        return fs

    def applies(self, d):
        return not self.office_only or len(self.candidates(d)) >= 20

    def step(self, d, seed, i):
        """Encrypts slice I (of self.slices); returns the files it touched."""
        if self.picked is None:
            fs = self.candidates(d)
            n = max(1, round(len(fs) * self.share))
            self.picked = random.Random(seed).sample(fs, min(n, len(fs)))
        lo = len(self.picked) * i // self.slices
        hi = len(self.picked) * (i + 1) // self.slices
        dirs = set()
        for p in self.picked[lo:hi]:
            st = os.stat(p)
            encrypt_in_place(p, self.mode, f"{seed}-{p}")
            if self.rename:
                os.rename(p, p + ".locked")
                p += ".locked"
            if self.mtime_back:
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
            dirs.add(os.path.dirname(p))
        if self.notes:
            for dd in sorted(dirs):
                note = os.path.join(dd, NOTE)
                if not os.path.exists(note):
                    with open(note, "w") as f:
                        f.write(NOTE_TEXT)
        return hi - lo


# ================================================================ normal work

def make_logs(d, seed):
    r = random.Random(seed)
    base = os.path.join(d, "var", "log")
    hosts = ["web1", "db1", "ci-runner"]
    progs = ["sshd", "CRON", "systemd", "kernel", "nginx", "postgres", "dockerd", "sudo"]
    words = corpus_lines()
    names = ["syslog", "auth.log", "kern.log", "daemon.log", "messages", "dpkg.log"]
    names += [f"nginx/access{i}.log" for i in range(12)] + [f"app/app-{i}.log" for i in range(16)]
    names += [f"postgresql/postgresql-{i}.log" for i in range(6)]
    paths = []
    for n in names:
        p = os.path.join(base, n)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        t = 1764000000 + r.randrange(86400)
        with open(p, "w") as f:
            for k in range(r.randint(300, 20000)):
                t += r.randint(0, 20)
                if "access" in n:
                    f.write(f'10.0.{r.randrange(256)}.{r.randrange(256)} - - [{time.strftime("%d/%b/%Y:%H:%M:%S", time.gmtime(t))} +0000] '
                            f'"GET /{r.choice(("", "api/v1/items", "static/app.js", "login", "img/logo.png"))} HTTP/1.1" '
                            f'{r.choice((200, 200, 200, 304, 404, 500))} {r.randint(100, 90000)} "-" "Mozilla/5.0"\n')
                else:
                    f.write(f'{time.strftime("%b %d %H:%M:%S", time.gmtime(t))} {r.choice(hosts)} '
                            f'{r.choice(progs)}[{r.randint(100, 40000)}]: {r.choice(words)[:100]}\n')
        paths.append(p)
    set_times(paths, seed, start=1764000000, span=86400)


def log_paths(d):
    return [p for p in regular_files(os.path.join(d, "var", "log")) if not p.endswith(".gz")]


def rotate_gzip(d, _seed):
    n = 0
    for p in log_paths(d):
        with open(p, "rb") as fi, gzip.open(p + ".gz", "wb") as fo:
            shutil.copyfileobj(fi, fo)
        os.unlink(p)
        n += 1
    return n


def rotate_logrotate(d, seed):
    r = random.Random(seed)
    n = 0
    for p in log_paths(d):
        with open(p, "rb") as fi, gzip.open(p + ".1.gz", "wb") as fo:
            shutil.copyfileobj(fi, fo)
        with open(p, "w") as f:  # truncated, logging goes on
            f.write("".join(f"Nov 30 00:00:{k:02d} web1 rsyslogd: rotated, line {r.random()}\n" for k in range(5)))
        n += 1
    return n


def place_tarball(d, seed):
    srcs = []
    for root, dirs, names in os.walk("/usr/include"):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                srcs.append(p)
    srcs = [p for _, p in sorted((hashlib.sha1(p.encode()).digest(), p) for p in srcs)][:800]
    dl = os.path.join(d, "downloads")
    os.makedirs(dl, exist_ok=True)
    with tarfile.open(os.path.join(dl, "headers-1.0.tar.gz"), "w:gz") as t:
        for p in sorted(srcs):
            t.add(p, arcname="headers-1.0/" + os.path.relpath(p, "/usr/include"))


def unpack_tarball(d, _seed):
    dl = os.path.join(d, "downloads")
    with tarfile.open(os.path.join(dl, "headers-1.0.tar.gz")) as t:
        members = t.getmembers()
        t.extractall(dl, filter="data")
    return len(members)


def rename_biggest_folder(d, _seed):
    """Renames the folder with the most files among those holding <= 60 % of the tree."""
    total = len(regular_files(d))
    best = None
    for root, dirs, _ in os.walk(d):
        dirs.sort()
        for x in dirs:
            p = os.path.join(root, x)
            n = len(regular_files(p))
            if n <= 0.6 * total and (best is None or n > best[0]):
                best = (n, p)
    os.rename(best[1], best[1] + " (old)")
    return best[0]


def system_libs():
    libs = []
    for p in glob.glob("/usr/lib/x86_64-linux-gnu/*.so*"):
        if os.path.isfile(p) and not os.path.islink(p) and 4_000 < os.path.getsize(p) < 4 * MiB:
            libs.append(p)
    return [p for _, p in sorted((hashlib.sha1(os.path.basename(p).encode()).digest(), p) for p in libs)]


def add_system_libs(d, _seed):
    out = os.path.join(d, "x86_64-linux-gnu")
    os.makedirs(out, exist_ok=True)
    for p in system_libs()[:150]:
        shutil.copy2(p, os.path.join(out, os.path.basename(p)))


def package_upgrade(d, seed):
    r = random.Random(seed)
    donors = system_libs()[150:]
    if not donors:
        donors = system_libs()
    targets = [p for p in regular_files(d) if ".so" in os.path.basename(p)]
    for i, p in enumerate(targets):
        new = p
        if i % 10 == 0:  # a new soname: old file removed, new one added
            new = p + ".1" if not p[-1].isdigit() else p[:-1] + str(int(p[-1]) + 1)
            os.unlink(p)
        with open(donors[(i + r.randrange(7)) % len(donors)], "rb") as f:
            data = f.read()
        with open(new + ".dpkg-new", "wb") as f:
            f.write(data)
        os.replace(new + ".dpkg-new", new)
    return len(targets)


def compileall(d, _seed):
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-f", "-j", "2", "-o", "0", "-o", "1", d],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0


def git_gc(d, _seed):
    repo = os.path.join(d, "rewind")
    sh(["git", "-C", repo, "gc", "-q", "--aggressive", "--prune=now"], env=git_env(os.path.dirname(d)))
    return 0


def gcc_build(d, seed):
    r = random.Random(seed)
    src = os.path.join(d, "rewind", "cbuild", "src")
    out = os.path.join(d, "rewind", "cbuild", "build")
    os.makedirs(src)
    os.makedirs(out)
    objs = []
    for i in range(24):
        c = os.path.join(src, f"unit{i}.c")
        with open(c, "w") as f:
            f.write("#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n")
            for k in range(r.randint(10, 40)):
                f.write(f"static const char *msg_{i}_{k} = \"unit {i} function {k}\";\n")
                f.write(f"int f_{i}_{k}(int x) {{ int s = 0; for (int j = 0; j < x; j++) "
                        f"s += (j * {r.randint(1, 99)}) ^ (s >> {r.randint(1, 7)}); "
                        f"if (s % {r.randint(2, 9)} == 0) puts(msg_{i}_{k}); return s + (int)strlen(msg_{i}_{k}); }}\n")
            f.write(f"int unit{i}(int x) {{ return " + " + ".join(f"f_{i}_{k}(x)" for k in range(10)) + "; }\n")
        o = os.path.join(out, f"unit{i}.o")
        sh(["gcc", "-O2", "-g", "-c", c, "-o", o])
        objs.append(o)
    main = os.path.join(src, "main.c")
    with open(main, "w") as f:
        f.write("".join(f"int unit{i}(int);\n" for i in range(24)))
        f.write("int main(int c, char **v) { int s = 0;" + "".join(f" s += unit{i}(c);" for i in range(24))
                + " return s & 1; }\n")
    sh(["ar", "rcs", os.path.join(out, "libunits.a")] + objs)
    sh(["gcc", "-O2", "-g", main, os.path.join(out, "libunits.a"), "-o", os.path.join(out, "app")])
    return 0


def photo_import(venv_py):
    def run(d, seed):
        out = os.path.join(d, "Pictures", "Import 2026-11-30")
        if subprocess.run([venv_py, "-c", "import PIL"], capture_output=True).returncode != 0:
            raise RuntimeError("photo import needs Pillow (the venv)")
        sh([venv_py, os.path.abspath(__file__), "--gen", "photos", out, "--gen-seed", str(seed % 100000),
            "--gen-count", "200"])
        return 0
    return run


def cache_dir(d):
    return os.path.join(d, ".cache", "chromium", "Default", "Cache", "Cache_Data")


def cache_before(d, seed):
    r = random.Random(seed)
    c = cache_dir(d)
    os.makedirs(c, exist_ok=True)
    for i in range(800):
        with open(os.path.join(c, f"{r.getrandbits(64):016x}_0"), "wb") as f:
            f.write(r.randbytes(r.randint(500, 150_000)))
    with open(os.path.join(c, "index"), "wb") as f:
        f.write(b"\x30\x5c\x72\xa7" + r.randbytes(64 * KiB))


def cache_churn(d, seed):
    r = random.Random(seed + 1)
    c = cache_dir(d)
    old = sorted(p for p in regular_files(c) if not p.endswith("index"))
    for p in r.sample(old, 300):
        os.unlink(p)
    for i in range(1500):
        with open(os.path.join(c, f"{r.getrandbits(64):016x}_0"), "wb") as f:
            f.write(r.randbytes(r.randint(500, 150_000)))
    with open(os.path.join(c, "index"), "wb") as f:
        f.write(b"\x30\x5c\x72\xa7" + r.randbytes(64 * KiB))
    return 1800


def sqlite_before(d, seed):
    r = random.Random(seed)
    words = corpus_lines()
    os.makedirs(os.path.join(d, "Documents"), exist_ok=True)
    db = sqlite3.connect(os.path.join(d, "Documents", "library.sqlite"))
    db.execute("create table items(id integer primary key, title text, body text, n integer, price real)")
    db.execute("create index items_n on items(n)")
    db.executemany("insert into items(title, body, n, price) values (?,?,?,?)",
                   ((r.choice(words)[:40], " ".join(r.choice(words) for _ in range(3)), r.randrange(10**6),
                     r.uniform(0, 1000)) for _ in range(120_000)))
    db.commit()
    db.close()


def sqlite_work(d, seed):
    r = random.Random(seed + 1)
    words = corpus_lines()
    db = sqlite3.connect(os.path.join(d, "Documents", "library.sqlite"))
    for _ in range(10):
        db.executemany("insert into items(title, body, n, price) values (?,?,?,?)",
                       ((r.choice(words)[:40], r.choice(words), r.randrange(10**6), r.uniform(0, 1000))
                        for _ in range(3000)))
        db.executemany("update items set price = ?, body = ? where id = ?",
                       ((r.uniform(0, 1000), r.choice(words), r.randint(1, 120_000)) for _ in range(2000)))
        db.executemany("delete from items where id = ?", ((r.randint(1, 120_000),) for _ in range(500)))
        db.commit()
    db.close()
    return 1


def vm_before(d, seed):
    r = random.Random(seed)
    feed = [p for p in regular_files("/usr/share/doc") + system_libs()[:60] if os.path.getsize(p) > 4096]
    feed = [p for _, p in sorted((hashlib.sha1(p.encode()).digest(), p) for p in feed)]
    os.makedirs(os.path.join(d, "VMs"), exist_ok=True)
    size = 96 * MiB
    with open(os.path.join(d, "VMs", "disk.img"), "wb") as f:
        k = 0
        while f.tell() < size:
            x = r.random()
            if x < 0.4:
                f.write(bytes(r.randint(1, 64) * 4 * KiB))
            elif x < 0.85:
                with open(feed[k % len(feed)], "rb") as g:
                    data = g.read(2 * MiB)
                k += 1
                f.write(data + bytes(-len(data) % (4 * KiB)))
            else:
                f.write(r.randbytes(r.randint(1, 16) * 4 * KiB))
        f.truncate(size)
    os.utime(os.path.join(d, "VMs", "disk.img"), (1735689600, 1735689600))


def vm_work(d, seed):
    r = random.Random(seed + 1)
    p = os.path.join(d, "VMs", "disk.img")
    blocks = os.path.getsize(p) // (4 * KiB)
    with open(p, "r+b") as f:
        for i in range(blocks * 6 // 100):
            b = r.randrange(blocks)
            if i % 2:
                f.seek(b * 4 * KiB)
                f.write(r.randbytes(4 * KiB))
            else:  # a guest writes file content
                src = r.randrange(blocks)
                f.seek(src * 4 * KiB)
                data = f.read(4 * KiB)
                f.seek(b * 4 * KiB)
                f.write(data)
    return 1


# ====================================================================== cells

class Cell:
    def __init__(self, tree, kind, name, steps, before=None, quick=False, attack=None, group=""):
        self.tree, self.kind, self.name, self.before = tree, kind, name, before
        self.steps, self.quick, self.attack, self.group = steps, quick, attack, group

    @property
    def id(self):
        return f"{self.tree}: {self.name}"


def attack_cell(tree, name, att, group, quick=False):
    steps = [lambda d, seed, i=i: att.step(d, seed, i) for i in range(att.slices)]
    return Cell(tree, "attack", name, steps, quick=quick, attack=att, group=group)


def pct(x):
    return f"{x * 100:g}%"


QUICK = {
    ("doc", "whole file, 30%"), ("doc", "first 4 KiB, 5%"), ("doc", "first 4 KiB, 5%, mtime put back"),
    ("doc", "every other 64 KiB, 30%"), ("doc", "first 4 KiB, 30%, over 3 backups"),
    ("doc", "log rotation: gzip in place (x.log -> x.log.gz)"), ("doc", "archive unpacked (tar.gz of 800 headers)"),
    ("office", "first 4 KiB, 30%"), ("office", "first 4 KiB, 30% of office/image files"),
    ("office", "photo import (200 new JPEGs)"), ("office", "SQLite database changed in place"),
    ("python", "first 1 KiB, 5%"), ("python", "package upgrade (.so replaced by other real .so)"),
}


def cells_for(tree, venv_py):
    out = []

    def add(c):
        c.quick = (tree, c.name) in QUICK
        out.append(c)

    for mode, mname in MODES:
        for share in (0.01, 0.05, 0.30, 1.0):
            add(attack_cell(tree, f"{mname}, {pct(share)}", Attack(mode, share), "A"))
    for share in (0.05, 0.30):
        s = pct(share)
        add(attack_cell(tree, f"first 4 KiB, {s}, mtime put back", Attack("head4k", share, mtime_back=True), "B"))
        add(attack_cell(tree, f"every other 64 KiB, {s}, mtime put back", Attack("alt64k", share, mtime_back=True), "B"))
        add(attack_cell(tree, f"whole file, {s}, mtime put back", Attack("whole", share, mtime_back=True), "B"))
        add(attack_cell(tree, f"first 4 KiB, {s}, renamed .locked", Attack("head4k", share, rename=True), "B"))
        add(attack_cell(tree, f"whole file, {s}, renamed .locked + notes",
                        Attack("whole", share, rename=True, notes=True), "B"))
        add(attack_cell(tree, f"first 4 KiB, {s}, in place + notes", Attack("head4k", share, notes=True), "B"))
        add(attack_cell(tree, f"first 4 KiB, {s} of office/image files", Attack("head4k", share, office_only=True), "B"))
        for k in (3, 10):
            add(attack_cell(tree, f"first 4 KiB, {s}, over {k} backups", Attack("head4k", share, slices=k), "slow"))
            add(attack_cell(tree, f"first 4 KiB, {s}, mtime put back, over {k} backups",
                            Attack("head4k", share, slices=k, mtime_back=True), "slow"))

    def normal(name, apply, before=None):
        add(Cell(tree, "normal", name, [lambda d, seed, i=0: apply(d, seed)], before=before, group="normal"))

    if tree == "synth":
        for kind, name, before, apply in ev.scenarios():
            if kind == "normal":
                normal(name, apply, before)
    elif tree == "doc":
        normal("log rotation: gzip in place (x.log -> x.log.gz)", rotate_gzip, make_logs)
        normal("log rotation: logrotate style (x.log -> x.log.1.gz, x.log restarted)", rotate_logrotate, make_logs)
        normal("archive unpacked (tar.gz of 800 headers)", unpack_tarball, place_tarball)
        normal("biggest folder renamed", rename_biggest_folder)
    elif tree == "python":
        normal("package upgrade (.so replaced by other real .so)", package_upgrade, add_system_libs)
        normal("build: python -m compileall -f (levels 0, 1)", compileall)
    elif tree == "git":
        normal("git gc --aggressive (loose objects packed)", git_gc)
        normal("build directory: gcc -O2 -g, 24 C files, a library, a binary", gcc_build)
    elif tree == "office":
        normal("photo import (200 new JPEGs)", photo_import(venv_py))
        normal("browser cache churn (300 evicted, 1,500 new random files)", cache_churn, cache_before)
        normal("SQLite database changed in place", sqlite_work, sqlite_before)
        normal("VM image changed in place (6 % of 4 KiB blocks)", vm_work, vm_before)
    elif tree == "mail":
        normal("biggest folder renamed", rename_biggest_folder)
    return out


# ===================================================================== runner

def flatten(obj, prefix=""):
    out = {}
    for k, v in (obj or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def rules_of(scan):
    """The verdict's rules (newer scans): [(name, value, threshold, fired)]."""
    out = []
    for r in (scan or {}).get("rules") or []:
        if isinstance(r, dict):
            out.append((str(r.get("name")), r.get("value"), str(r.get("threshold", "")), bool(r.get("fired"))))
    return out


def slim(scan):
    """The scan for the CSV: suspect_keys (up to 4,000 numbers) replaced by their count."""
    if not scan:
        return scan
    s = dict(scan)
    if "suspect_keys" in s:
        s["suspect_keys"] = len(s["suspect_keys"] or [])
    return s


def signals_of(counts):
    return {k: v for k, v in counts.items()
            if v and k.split(".")[-1] not in CONTEXT and "threshold" not in k and not k.endswith(("_min", "_limit"))}


class Runner:
    def __init__(self, a):
        self.a = a
        self.rewind = os.path.abspath(a.rewind)
        self.work = a.work
        self.env = dict(os.environ, REWIND_PASSWORD="eval", XDG_CONFIG_HOME=os.path.join(a.work, "cfg"),
                        XDG_DATA_HOME=os.path.join(a.work, "xdg"), HOME=a.work)
        for k in ("REWIND_REPOSITORY", "REWIND_PASSWORD_FILE", "REWIND_NOTIFY_URL"):
            self.env.pop(k, None)
        h = subprocess.run([self.rewind, "backup", "--help"], capture_output=True, text=True)
        self.no_scan = "--no-scan" in h.stdout
        with open(self.rewind, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(self.rewind)))
        version = subprocess.run([self.rewind, "--version"], capture_output=True, text=True).stdout.strip()
        self.version = f"{version}, sha256 {digest}, built {built}"
        self.data = os.path.join(a.work, "data")
        self.repo = os.path.join(a.work, "repo")
        self.twin = os.path.join(a.work, "repo-noscan")
        self.n = 0

    def rw(self, repo, *args):
        return subprocess.run([self.rewind, "-r", repo, *args], env=self.env, capture_output=True, text=True)

    def backup(self, repo, scan):
        t0 = time.perf_counter()
        r = self.rw(repo, "--json", "backup", *([] if scan else ["--no-scan"]), self.data)
        dt = time.perf_counter() - t0
        summary = None
        for line in r.stdout.splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if isinstance(j, dict) and j.get("message_type") == "summary":
                summary = j
        if r.returncode not in (0, 3, 4):
            raise RuntimeError(f"backup failed ({r.returncode}): {r.stderr.strip()[-400:]}")
        scan_res = (summary or {}).get("scan")
        if scan and scan_res is None and summary and summary.get("snapshot_id"):
            # Fall back to the stored snapshot's `scan`.
            s = self.rw(repo, "--json", "snapshots")
            try:
                for snap in json.loads(s.stdout):
                    if snap.get("id") == summary["snapshot_id"]:
                        scan_res = snap.get("scan")
            except ValueError:
                pass
        return {"rc": r.returncode, "time": dt, "scan": scan_res,
                "scan_error": (summary or {}).get("scan_error")}

    def run(self, cell, pristine):
        self.n += 1
        t_cell = time.perf_counter()
        seed = stable_int(cell.id) % 10**9
        for p in (self.data, self.repo, self.twin):
            shutil.rmtree(p, ignore_errors=True)
        sh(["cp", "-a", pristine, self.data])
        if cell.before:
            cell.before(self.data, seed)
        if cell.attack and not cell.attack.applies(self.data):
            return None
        r = self.rw(self.repo, "init", "-q")
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        r = self.rw(self.repo, "backup", "-q", self.data)
        if r.returncode not in (0, 3):
            raise RuntimeError(f"baseline backup failed: {r.stderr}")
        if self.no_scan:
            sh(["cp", "-a", self.repo, self.twin])
        files = len(regular_files(self.data))
        steps, cum = [], 0
        t_apply = 0.0
        for i, step in enumerate(cell.steps):
            t0 = time.perf_counter()
            touched = step(self.data, seed, i) if cell.attack else step(self.data, seed)
            t_apply += time.perf_counter() - t0
            cum += touched or 0
            # Extra timing rounds back up the same change into copies of the
            # repositories as they are now; the fastest of each kind counts.
            extra = []
            for k in range(1, self.a.timing_runs):
                cs, cn = f"{self.repo}-t{k}", f"{self.twin}-t{k}"
                sh(["cp", "-a", self.repo, cs])
                if self.no_scan:
                    sh(["cp", "-a", self.twin, cn])
                extra.append({True: cs, False: cn})
            res, best = {}, {}
            for k, repos in enumerate([{True: self.repo, False: self.twin}] + extra):
                order = [True, False] if (self.n + i + k) % 2 == 0 else [False, True]
                for scan in order:
                    if scan or self.no_scan:
                        b = self.backup(repos[scan], scan)
                        if k == 0:
                            res[scan] = b
                        best[scan] = min(best.get(scan, b["time"]), b["time"])
            for repos in extra:
                for p in repos.values():
                    shutil.rmtree(p, ignore_errors=True)
            s = res[True]
            scan_res = s["scan"] or {}
            flagged = s["rc"] == 4 or scan_res.get("verdict") == "suspicious"
            steps.append({"i": i + 1, "cum": cum, "share": cum / max(files, 1), "flagged": flagged,
                          "rc": s["rc"], "scan": s["scan"], "scan_error": s["scan_error"],
                          "t": best[True], "t_ns": best.get(False)})
        first = next((s for s in steps if s["flagged"]), None)
        shown = first or steps[-1]
        counts = flatten((shown["scan"] or {}).get("counts"))
        rules = rules_of(shown["scan"])
        row = {
            "tree": cell.tree, "kind": cell.kind, "group": cell.group, "scenario": cell.name,
            "files": files, "touched": cum if cell.attack else "",
            "touched_pct": round(100 * cum / max(files, 1), 2) if cell.attack else "",
            # The share the summary classes an attack by: the nominal one (of the
            # non-empty files), the files actually touched for office/image only.
            "share_pct": "" if not cell.attack else round(
                100 * cum / max(files, 1) if cell.attack.office_only else 100 * cell.attack.share, 2),
            "backups": len(steps), "flagged": any(s["flagged"] for s in steps),
            "first_flag_backup": first["i"] if first else "",
            "first_flag_pct": round(100 * first["share"], 2) if first else "",
            "flagged_by_5pct": "", "exit_codes": " ".join(str(s["rc"]) for s in steps),
            "verdict": (shown["scan"] or {}).get("verdict", "none"),
            "score": round((shown["scan"] or {}).get("score", 0) or 0, 4),
            "suspects": counts.get("suspects", 0),
            "signals": ", ".join(f"{k} {v:g}" for k, v in signals_of(counts).items()),
            "rules_fired": ", ".join(f"{n} {v:g}" if isinstance(v, (int, float)) else n
                                     for n, v, _, fired in rules if fired),
            "rules": " | ".join(f"{n}={v}{' FIRED' if fired else ''} ({t})" for n, v, t, fired in rules),
            "accumulated_from": " ".join((shown["scan"] or {}).get("accumulated_from") or []),
            "reasons": " | ".join((shown["scan"] or {}).get("reasons", [])),
            "scan_error": shown["scan_error"] or "",
            "backup_s": round(sum(s["t"] for s in steps), 3),
            "backup_noscan_s": round(sum(s["t_ns"] for s in steps), 3) if self.no_scan else "",
            "apply_s": round(t_apply, 2),
            "cell_s": round(time.perf_counter() - t_cell, 1),
            "steps": "; ".join(f"{s['i']}:{100 * s['share']:.1f}%:{'FLAG' if s['flagged'] else 'pass'}:"
                               f"suspects={flatten((s['scan'] or {}).get('counts')).get('suspects', 0)}"
                               + (f",acc={flatten(s['scan']['counts'])['accumulated']}"
                                  if "accumulated" in flatten((s["scan"] or {}).get("counts")) else "")
                               for s in steps) if len(steps) > 1 else "",
            "rewind": self.version,
        }
        if cell.attack and cell.attack.slices > 1:
            # The backup at which the cumulative share first reached 5 %.
            k5 = next((s["i"] for s in steps if s["cum"] >= 0.05 * files - 0.5), steps[-1]["i"])
            row["flagged_by_5pct"] = bool(first and first["i"] <= k5)
        for k, v in counts.items():
            row[f"count.{k}"] = v
        row["scan_json"] = json.dumps(slim(shown["scan"]), sort_keys=True) if shown["scan"] else ""
        return row


def fmt_row(row):
    if row["kind"] == "attack":
        touched = f"{row['touched']} ({row['touched_pct']:g}%)"
    else:
        touched = "—"
    if row["flagged"]:
        fl = "**flagged**"
        if row["backups"] > 1:
            fl += f" at {row['first_flag_backup']}/{row['backups']} ({row['first_flag_pct']:g}%)"
        if row["rules_fired"]:
            fl += f" ({', '.join(x.split(' ')[0] for x in row['rules_fired'].split(', '))})"
    else:
        fl = "clean" if row["backups"] == 1 else f"clean ×{row['backups']}"
    t = f"{row['backup_s']:.2f} s"
    if row["backup_noscan_s"] != "":
        t += f" / {row['backup_noscan_s']:.2f} s"
    name = row["scenario"].replace("|", "/")
    sus = str(row["suspects"])
    if row.get("count.accumulated"):
        sus += f" ({row['count.accumulated']} acc.)"
    return (f"| {row['tree']} | {row['kind']} | {name} | {touched} | {fl} | {row['signals'] or '—'} | "
            f"{sus} | {t} |")


def summarize(rows, runner, elapsed):
    out = []
    big = [r for r in rows if r["kind"] == "attack" and r["share_pct"] >= 5 - 1e-9]
    small = [r for r in rows if r["kind"] == "attack" and r["share_pct"] < 5 - 1e-9]
    normal = [r for r in rows if r["kind"] == "normal"]
    slow = [r for r in rows if r["kind"] == "attack" and r["backups"] > 1]

    def rate(a, b):
        return f"{a}/{b} ({100 * a / b:.1f} %)" if b else "0/0"
    out.append(f"detection, attacks touching >= 5 % of files: {rate(sum(r['flagged'] for r in big), len(big))}"
               f"  (target >= 99 %)")
    missed = [f"{r['tree']}: {r['scenario']}" for r in big if not r["flagged"]]
    if missed:
        out.append("  missed: " + "; ".join(missed))
    out.append(f"attacks touching < 5 % (informative): {rate(sum(r['flagged'] for r in small), len(small))}")
    out.append(f"false alarms over normal work: {rate(sum(r['flagged'] for r in normal), len(normal))}"
               f"  (target <= 1 %)")
    fa = [f"{r['tree']}: {r['scenario']}" for r in normal if r["flagged"]]
    if fa:
        out.append("  flagged: " + "; ".join(fa))
    out.append(f"slow attacks flagged by the time they touched 5 %: "
               f"{rate(sum(bool(r['flagged_by_5pct']) for r in slow), len(slow))}  (target: all)")
    pairs = [(r["backup_s"], r["backup_noscan_s"]) for r in rows if r["backup_noscan_s"] not in ("", 0)]
    if pairs:
        ratios = [a / b - 1 for a, b in pairs if b > 0]
        tot_s, tot_ns = sum(a for a, _ in pairs), sum(b for _, b in pairs)
        out.append(f"backup time with scan vs --no-scan: total {tot_s:.1f} s vs {tot_ns:.1f} s "
                   f"({100 * (tot_s / tot_ns - 1):+.1f} %), median per cell {100 * statistics.median(ratios):+.1f} %"
                   f"  (target <= 5 %; "
                   + (f"fastest of {runner.a.timing_runs} runs)" if runner.a.timing_runs > 1 else "single runs, noisy)"))
    else:
        out.append("backup time: this rewind has no --no-scan; wall time only")
    out.append(f"{len(rows)} cells in {elapsed / 60:.1f} min, {runner.version} ({runner.rewind})")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rewind", default=os.path.join(MAIN, "target", "release", "rewind"))
    ap.add_argument("--work", default="/tmp/rw-grid")
    ap.add_argument("--trees", default=None, help="comma list of " + ",".join(ALL_TREES))
    ap.add_argument("--only", default=None, help="run cells whose 'tree: scenario' contains this")
    ap.add_argument("--quick", action="store_true", help="the [quick] subset, about 2 minutes")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--venv", default="/tmp/rw-grid-venv")
    ap.add_argument("--max-files", type=int, default=4000)
    ap.add_argument("--max-mb", type=int, default=200)
    ap.add_argument("--git-rev", default=GIT_PIN)
    ap.add_argument("--timing-runs", type=int, default=1,
                    help="time each backup (scan and --no-scan) this many times, keep the fastest")
    ap.add_argument("--fresh-trees", action="store_true", help="rebuild the cached pristine trees")
    ap.add_argument("--gen", nargs=2, metavar=("KIND", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--gen-seed", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--gen-count", type=int, default=200, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.gen:  # run inside the venv by prepare_tree / photo_import
        kind, out = a.gen
        if kind == "office":
            gen_office(out, a.gen_seed)
        elif kind == "photos":
            gen_photos(out, a.gen_seed, a.gen_count)
        return
    a.work = os.path.abspath(a.work)
    if not a.work.startswith("/tmp/"):
        sys.exit("--work must be under /tmp")
    os.makedirs(a.work, exist_ok=True)
    trees = a.trees.split(",") if a.trees else (QUICK_TREES if a.quick else ALL_TREES)
    for t in trees:
        if t not in ALL_TREES:
            sys.exit(f"unknown tree {t}; trees: {','.join(ALL_TREES)}")
    runner = Runner(a)
    venv_py, venv_note = ensure_venv(a) if "office" in trees else (sys.executable, "")
    print(f"rewind: {runner.version} ({runner.rewind}); --no-scan: {'yes' if runner.no_scan else 'no'}", flush=True)
    if venv_note:
        print(f"office generators: {venv_note}", flush=True)
    t_start = time.time()
    rows = []
    for t in trees:
        cells = [c for c in cells_for(t, venv_py) if (not a.quick or c.quick) and (not a.only or a.only in c.id)]
        if not cells:
            continue
        pristine, st = prepare_tree(t, a)
        print(f"\n== tree {t}: {st['files']} files, {st['bytes'] / MiB:.0f} MiB ({st['note']}); "
              f"{len(cells)} cells", flush=True)
        for c in cells:
            try:
                row = runner.run(c, pristine)
            except Exception as e:  # noqa: BLE001  (a broken cell must not stop the grid)
                print(f"ERR {c.id}: {e}", flush=True)
                continue
            if row is None:
                print(f"--  {c.id}: skipped (fewer than 20 office/image files)", flush=True)
                continue
            rows.append(row)
            ok = row["flagged"] == (row["kind"] == "attack")
            print(f"{'ok' if ok else 'XX'} {row['kind']:6} {'FLAG' if row['flagged'] else 'pass'} "
                  f"{c.id} [{row['touched_pct'] if row['kind'] == 'attack' else '-'}%] "
                  f"suspects {row['suspects']}; {row['signals'] or '-'}"
                  f"{'; rules ' + row['rules_fired'] if row['rules_fired'] else ''}"
                  f"{'; ' + row['steps'] if row['steps'] else ''}; {row['backup_s']:.2f}/"
                  f"{row['backup_noscan_s'] if row['backup_noscan_s'] != '' else '-'} s", flush=True)
    for p in (runner.data, runner.repo, runner.twin):
        shutil.rmtree(p, ignore_errors=True)
    elapsed = time.time() - t_start
    if not rows:
        print("no cells ran")
        return
    print("\n| tree | kind | scenario | files touched | flagged | signals (nonzero counts) | suspects | "
          "backup, scan / --no-scan |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(fmt_row(r))
    print()
    for line in summarize(rows, runner, elapsed):
        print(line)
    if a.csv:
        fields = []
        for r in rows:
            for k in r:
                if k not in fields:
                    fields.append(k)
        # counts and the scan JSON last
        fields = [f for f in fields if not f.startswith("count.") and f != "scan_json"] + \
                 sorted(f for f in fields if f.startswith("count.")) + ["scan_json"]
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, restval="")
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
