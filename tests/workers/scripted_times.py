"""A kernel worker whose repeat times come from a script (tests/external.rs, issue 29): `scripted_times.py
T1,T2,...` is the numpy reference with its i-th timed repeat reported as T(i) ms (the list repeats), so
attnbench's repeat policy can be checked to ask an external worker exactly what it asks an in-process
clock with the same times. It also reports each `time` request's repeat count in its clock's name.
"""

import sys

from attnbench_worker import serve
from attnbench_worker.adapters.numpy_ref import NumpyReference

SCRIPT = [float(t) for t in sys.argv[1].split(",")]
GIVEN = []
ASKED = []


class ScriptedTimes(NumpyReference):
    name = "scripted-times"

    def measure(self, case, call, warmup, repeats, timing_mode):
        super().measure(case, call, warmup, repeats, timing_mode)
        ASKED.append(repeats)
        times = [SCRIPT[(len(GIVEN) + i) % len(SCRIPT)] for i in range(repeats)]
        GIVEN.extend(times)
        return times, "scripted-" + "+".join(str(a) for a in ASKED)


serve(ScriptedTimes())
