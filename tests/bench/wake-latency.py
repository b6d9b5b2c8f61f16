#!/usr/bin/env python3
"""How late a SCHED_FIFO thread's 1 ms sleeps come back on this machine,
without and with a SCHED_IDLE spinner on every CPU (what the test kit's
delay line does while it runs, tests/src/delay.rs). Needs root.

    python3 tests/bench/wake-latency.py [SECONDS]

Prints the 50th, 99th and 99.9th percentile and the maximum lateness of
each case, in ms. On a VM a halted vCPU is woken by the host, late by
however long the host takes; a vCPU kept busy is not halted.
"""
import multiprocessing
import os
import sys
import time


def spinner(cpu, stop):
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while not stop.is_set():
        pass


def lateness(seconds):
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    late = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic_ns()
        time.sleep(0.001)
        late.append((time.monotonic_ns() - t - 1_000_000) / 1e6)
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    late.sort()
    n = len(late)
    return "p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms (%d sleeps)" % (
        late[n // 2], late[int(n * 0.99)], late[int(n * 0.999)], late[-1], n)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    print("idle CPUs:         ", lateness(seconds))
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=spinner, args=(cpu, stop))
             for cpu in sorted(os.sched_getaffinity(0))]
    for p in procs:
        p.start()
    time.sleep(0.5)
    try:
        print("SCHED_IDLE spinners:", lateness(seconds))
    finally:
        stop.set()
        for p in procs:
            p.join()


if __name__ == "__main__":
    main()
