#!/usr/bin/env python3
"""Mail backup speed: a first and an incremental backup of a Dovecot mailbox.

    python3 bench/imap.py [--work /tmp/rw-imap] [--rewind target/release/rewind] [--messages 10000]

Starts a Dovecot of its own on a loopback port (as root: its mail processes
run as nobody), fills INBOX with MESSAGES messages (2-8 KiB of text, one in
fifty with a 200 KiB attachment), backs it up with `rewind backup imap://`,
adds 1 % new messages and flags 1 %, and backs up again. Prints messages per
second for both, and the same mailbox's Maildir read from disk by a file
backup for comparison.
"""

import argparse, base64, imaplib, json, os, random, shutil, subprocess, time

ap = argparse.ArgumentParser()
ap.add_argument("--work", default="/tmp/rw-imap")
ap.add_argument("--rewind", default="target/release/rewind")
ap.add_argument("--messages", type=int, default=10000)
ap.add_argument("--port", type=int, default=21431)
a = ap.parse_args()
rewind = os.path.abspath(a.rewind)
shutil.rmtree(a.work, ignore_errors=True)
d = a.work
os.makedirs(f"{d}/home")
os.chmod(d, 0o755)
subprocess.run(["chown", "nobody:nogroup", f"{d}/home"], check=True)
open(f"{d}/passwd", "w").write("alice:{PLAIN}pw::::::\n")
open(f"{d}/dovecot.conf", "w").write(f"""base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
first_valid_uid = 0
mail_location = maildir:{d}/home/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {a.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
""")
dv = subprocess.Popen(["dovecot", "-F", "-c", f"{d}/dovecot.conf"])
try:
    time.sleep(1.5)
    rnd = random.Random(1)
    def msg(i):
        body = "".join(rnd.choice("abcdefghij klmnop\r\n") for _ in range(rnd.randint(2000, 8000)))
        m = f"From: b@example.com\r\nTo: a@example.com\r\nSubject: m {i}\r\nMessage-ID: <{i}@bench>\r\n"
        if i % 50 == 0:
            att = base64.encodebytes(os.urandom(200_000)).decode().replace("\n", "\r\n")
            m += f"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\n{body}\r\n--x\r\nContent-Transfer-Encoding: base64\r\n\r\n{att}--x--\r\n"
        else:
            m += f"\r\n{body}\r\n"
        return m.encode()
    c = imaplib.IMAP4("127.0.0.1", a.port)
    c.login("alice", "pw")
    t = time.time()
    for i in range(a.messages):
        c.append("INBOX", None, None, msg(i))
    print(f"filled {a.messages} messages in {time.time() - t:.1f} s")
    env = dict(os.environ, REWIND_REPOSITORY=f"{d}/repo", REWIND_PASSWORD="bench", REWIND_IMAP_PASSWORD="pw")
    subprocess.run([rewind, "init", "-q"], env=env, check=True)
    url = f"imap://alice@127.0.0.1:{a.port}?tls=none"
    def backup(args):
        t = time.time()
        out = subprocess.run([rewind, "--json", "backup", *args], env=env, capture_output=True, text=True, check=True)
        s = [json.loads(l) for l in out.stdout.splitlines() if '"summary"' in l][0]
        return time.time() - t, s
    secs, s = backup([url])
    print(f"first mail backup: {secs:.2f} s, {s['files_new']} messages, {s['bytes_read'] / 2**20:.1f} MiB: {s['files_new'] / secs:.0f} messages/s")
    c.select("INBOX")
    for i in range(a.messages, a.messages + a.messages // 100):
        c.append("INBOX", None, None, msg(i))
    for i in range(1, a.messages, 100):
        c.store(str(i), "+FLAGS", "(\\Flagged)")
    secs, s = backup([url])
    print(f"incremental mail backup (+1 % new, 1 % flagged): {secs:.2f} s, {s['files_new']} new, {s['files_unchanged']} kept: {(s['files_new'] + s['files_unchanged']) / secs:.0f} messages/s looked at")
    secs, s = backup([url])
    print(f"no-change mail backup: {secs:.2f} s")
    secs, s = backup([f"{d}/home/alice/Maildir"])
    print(f"the same Maildir as files (first backup, from disk): {secs:.2f} s, {s['files_new']} files: {s['files_new'] / secs:.0f} files/s")
finally:
    dv.terminate()
    dv.wait()
