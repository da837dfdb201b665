"""A kernel worker whose clock lies (tests/robust30.rs, issue 30 item 13): `badtimes.py MODE` is the
numpy reference with the repeat times replaced — `zero` (0 ms each), `negative` (-1 ms), `huge` (a day
each, beyond any case's deadline). attnbench must call each a protocol violation, not an `ok` row.
"""

import sys

from attnbench_worker import serve
from attnbench_worker.adapters.numpy_ref import NumpyReference

MODE = sys.argv[1]
FAKE = {"zero": 0.0, "negative": -1.0, "huge": 86_400_000.0}[MODE]


class BadTimes(NumpyReference):
    name = f"badtimes-{MODE}"

    def measure(self, case, call, warmup, repeats, timing_mode):
        _, clock = super().measure(case, call, warmup, repeats, timing_mode)
        return [FAKE] * repeats, clock


serve(BadTimes())
