#!/usr/bin/env python3
"""Holds many TCP connections to one echo service and checks them on command, for
scripts/demo-scaleout and the fleet test. Kernel sockets, one epoll loop, no threads.

Commands on stdin, one JSON answer per line on stdout:
  open N      open N connections (sources 198.19.0.1-16, ports from the kernel), each
              checked with one echoed byte: {"opened":..,"failed":..,"secs":..}, and
              for failures their kinds: "refused" (connect failed), "reset", "eof"
              (after the connect), "timeout" (no echo within 5 s)
  check       send one byte on every live connection and wait for its echo:
              {"ok":..,"eof":..,"broken":..}: eof is an orderly close by the server
              (FIN), broken a reset or no echo within 5 s; eof and broken connections
              are dropped from the live set
  wait-eof S  read for up to S seconds without sending; count the FINs that arrive:
              {"eof":..,"broken":..,"secs":..}
  live        {"live":..}
  quit        close everything and exit
"""
import json
import os
import resource
import select
import socket
import sys
import time

SERVICE = (sys.argv[1], int(sys.argv[2])) if len(sys.argv) > 2 else ("198.18.100.10", 7)
SOURCES = [f"198.19.0.{i}" for i in range(1, 17)]
IP_BIND_ADDRESS_NO_PORT = 24
IN_FLIGHT = 2000
TIMEOUT = 5.0

_, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (HARD, HARD))
ep = select.epoll()
live = {}  # fd -> socket
opened_total = 0


def say(obj):
    print(json.dumps(obj), flush=True)


def classify(s):
    """Reads what a socket has: 'data', 'eof' or 'broken' (reset)."""
    try:
        data = s.recv(4096)
    except BlockingIOError:
        return None
    except OSError:
        return "broken"
    return "data" if data else "eof"


def open_conns(n):
    global opened_total
    t0 = time.monotonic()
    pending = {}  # fd -> (socket, deadline, phase)
    failed = opened = 0
    why = {"refused": 0, "reset": 0, "eof": 0, "timeout": 0}
    todo = n
    while todo or pending:
        while todo and len(pending) < IN_FLIGHT:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((SOURCES[opened_total % len(SOURCES)], 0))
            opened_total += 1
            s.setblocking(False)
            s.connect_ex(SERVICE)
            ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLIN)
            pending[s.fileno()] = (s, time.monotonic() + TIMEOUT, "connect")
            todo -= 1
        for fd, ev in ep.poll(0.05):
            if fd not in pending:
                continue
            s, deadline, phase = pending[fd]
            if phase == "connect" and ev & select.EPOLLOUT:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    failed += 1
                    why["refused"] += 1
                    del pending[fd]
                    ep.unregister(fd)
                    s.close()
                    continue
                s.send(b"x")
                ep.modify(fd, select.EPOLLIN)
                pending[fd] = (s, deadline, "echo")
            elif phase == "echo" and ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                r = classify(s)
                if r is None:
                    continue
                del pending[fd]
                ep.unregister(fd)
                if r == "data":
                    live[fd] = s
                    opened += 1
                else:
                    failed += 1
                    why["reset" if r == "broken" else "eof"] += 1
                    s.close()
        now = time.monotonic()
        for fd in [fd for fd, (_, d, _) in pending.items() if d < now]:
            s = pending.pop(fd)[0]
            ep.unregister(fd)
            s.close()
            failed += 1
            why["timeout"] += 1
    answer = {"opened": opened, "failed": failed, "secs": round(time.monotonic() - t0, 2)}
    say(answer | {k: n for k, n in why.items() if n})


def check():
    """Echo-checks the live connections, IN_FLIGHT at a time (a burst of 30,000 would
    overflow the router's backlog and count retransmission delays as breakage)."""
    ok = eof = broken = 0
    fds = list(live)
    for i in range(0, len(fds), IN_FLIGHT):
        waiting = {}
        for fd in fds[i:i + IN_FLIGHT]:
            s = live[fd]
            try:
                s.send(b"y")
                ep.register(fd, select.EPOLLIN)
                waiting[fd] = s
            except OSError:
                broken += 1
                del live[fd]
                s.close()
        deadline = time.monotonic() + TIMEOUT
        while waiting and time.monotonic() < deadline:
            for fd, _ in ep.poll(0.05):
                s = waiting.get(fd)
                if s is None:
                    continue
                r = classify(s)
                if r is None:
                    continue
                del waiting[fd]
                ep.unregister(fd)
                if r == "data":
                    ok += 1
                else:
                    eof += r == "eof"
                    broken += r == "broken"
                    del live[fd]
                    s.close()
        for fd, s in waiting.items():
            ep.unregister(fd)
            del live[fd]
            s.close()
            broken += 1
    say({"ok": ok, "eof": eof, "broken": broken})


def wait_eof(secs):
    t0 = time.monotonic()
    eof = broken = 0
    for fd in live:
        ep.register(fd, select.EPOLLIN)
    while time.monotonic() - t0 < secs:
        for fd, _ in ep.poll(0.05):
            s = live.get(fd)
            if s is None:
                continue
            r = classify(s)
            if r in ("eof", "broken"):
                ep.unregister(fd)
                del live[fd]
                s.close()
                eof += r == "eof"
                broken += r == "broken"
    for fd in live:
        ep.unregister(fd)
    say({"eof": eof, "broken": broken, "secs": round(time.monotonic() - t0, 2)})


for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "open":
        open_conns(int(words[1]))
    elif words[0] == "check":
        check()
    elif words[0] == "wait-eof":
        wait_eof(float(words[1]))
    elif words[0] == "live":
        say({"live": len(live)})
    elif words[0] == "quit":
        break
for s in live.values():
    s.close()
os._exit(0)
