#!/usr/bin/env python3
"""Writes job-mix.csv: the job mix `flinger-bench estimate` replays through the queue estimator.

A synthetic mix, not a lab's export (this project has no real lab's history to publish), shaped
like a Testflinger queue's: half quick test-only jobs (about 5 min), a third provision-and-test
jobs (about 25 min), a tenth long test runs (about 1.5 h), a few early provisioning failures
(1-2 min); CI pipelines submit bursts of 3-8 jobs every 40 min on average, people one job an
hour. Seeded, so the file is the same every time. A real lab's history in the same two columns
(seconds since the first submission, seconds from lease to end) can be replayed with --mix.
"""
import random

rng = random.Random(12)
HOURS = 48


def duration():
    r = rng.random()
    if r < 0.50:
        return rng.lognormvariate(5.7, 0.5)  # median ~300 s
    if r < 0.85:
        return rng.lognormvariate(7.31, 0.35)  # median ~1500 s
    if r < 0.95:
        return rng.lognormvariate(8.59, 0.4)  # median ~5400 s
    return rng.uniform(30, 120)


arrivals = []
t = 0.0
while True:
    t += rng.expovariate(1 / 2400)  # a CI burst every 40 min on average
    if t > HOURS * 3600:
        break
    arrivals += [t + i * rng.uniform(0, 5) for i in range(rng.randint(3, 8))]
t = 0.0
while True:
    t += rng.expovariate(1 / 3600)  # people: one job an hour
    if t > HOURS * 3600:
        break
    arrivals.append(t)
arrivals.sort()
with open(__file__.replace("job-mix.py", "job-mix.csv"), "w") as f:
    f.write("# Written by job-mix.py (seeded): a synthetic mix, see there.\n")
    f.write("arrival_s,duration_s\n")
    for a in arrivals:
        f.write(f"{a - arrivals[0]:.0f},{duration():.0f}\n")
