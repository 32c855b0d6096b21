"""A workload that holds its X.509-SVIDs the way a real one does, and records whether they are valid.

It keeps `spire-agent api watch` (a FetchX509SVID stream, reconnecting when the agent restarts)
running, remembers the newest "SVID Valid Until" of every SPIFFE ID it received, and once a
second appends a JSON line: the time, the SVIDs held, whether all of them are unexpired, how many
updates and stream errors it saw. A gap is a line with "valid": false after the first valid one.
"""

import datetime as dt
import json
import subprocess
import sys
import threading
import time

SOCKET = "/run/spire/agent/public/api.sock"
state = {"held": {}, "updates": 0, "errors": 0, "current": None}
lock = threading.Lock()


def parse_go_time(text):
    # "2026-11-23 11:00:00 +0000 UTC"
    return dt.datetime.strptime(text.strip()[:25], "%Y-%m-%d %H:%M:%S %z").timestamp()


def read_updates(proc):
    for line in proc.stdout:
        key, sep, value = line.partition(":")
        with lock:
            if line.startswith("Received "):
                state["updates"] += 1
            elif not sep:
                continue
            elif key == "SPIFFE ID":
                state["current"] = value.strip()
            elif key == "SVID Valid Until" and state["current"]:
                state["held"][state["current"]] = parse_go_time(value)


def read_errors(proc):
    for _line in proc.stderr:
        with lock:
            state["errors"] += 1


def start_watch():
    proc = subprocess.Popen(["/usr/bin/spire-agent", "api", "watch", "-socketPath", SOCKET],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    threading.Thread(target=read_updates, args=(proc,), daemon=True).start()
    threading.Thread(target=read_errors, args=(proc,), daemon=True).start()
    return proc


def main():
    out = open(sys.argv[1], "a", buffering=1)
    proc = start_watch()
    while True:
        if proc.poll() is not None:  # the watch command itself ended: start another
            proc = start_watch()
        now = time.time()
        with lock:
            held = dict(state["held"])
            record = {"t": now, "held": held, "valid": bool(held) and min(held.values()) > now,
                      "updates": state["updates"], "errors": state["errors"]}
        out.write(json.dumps(record, sort_keys=True) + "\n")
        time.sleep(1)


if __name__ == "__main__":
    main()
