"""Deliberately broken kernel workers for tests/external.rs: `faulty.py MODE`. Each one breaks the
protocol or the maths in one way; attnbench must turn it into the right row and go on with the sweep.

wrong      numpy-ref with 0.1 added to the output            -> wrong
wronglse   numpy-ref with 0.5 added to the LSE               -> wrong (the LSE check)
crash      aborts on its first case                          -> error (signal 6)
sleep      writes its pid to $ATTNBENCH_TEST_PIDFILE, sleeps -> timeout, and no orphan left behind
garbage    answers a line that is not JSON                   -> error (protocol violation)
badshape   writes an output tensor of the wrong shape        -> error (protocol violation)
unsupported refuses every case                               -> unsupported
oldproto   speaks protocol 0 in the handshake                -> error (version)
badseed    hands over q reversed along the head dim           -> the seed check reports a difference
"""

import json
import os
import sys
import time

from attnbench_worker import Prepared, TorchAdapter, Unsupported, helper, serve
from attnbench_worker.adapters.numpy_ref import NumpyReference
from attnbench_worker.helper import PREFIX, Inputs

MODE = sys.argv[1]


class Faulty(NumpyReference):
    name = f"faulty-{MODE}"

    def prepare(self, case, x):
        if MODE == "crash":
            os.abort()
        if MODE == "sleep":
            with open(os.environ["ATTNBENCH_TEST_PIDFILE"], "w") as f:
                f.write(str(os.getpid()))
            time.sleep(3600)
        if MODE == "garbage":
            helper.ANSWERS.write(PREFIX + "{this is not json\n")
            helper.ANSWERS.flush()
        if MODE == "unsupported":
            raise Unsupported("test worker: refuses every case")
        p = super().prepare(case, x)
        if MODE == "wrong":
            return Prepared(lambda: (lambda r: (r[0] + 0.1, r[1]))(p.forward()), backward=p._backward)
        if MODE == "wronglse":
            return Prepared(lambda: (lambda r: (r[0], r[1] + 0.5))(p.forward()), backward=p._backward)
        if MODE == "badshape":
            return Prepared(lambda: (lambda r: (r[0][:, :, :, :-1], r[1]))(p.forward()), backward=p._backward)
        return p


class BadSeed(TorchAdapter):
    name = "faulty-badseed"

    def load_inputs(self, case, seed, path):
        x = super().load_inputs(case, seed, path)
        return Inputs(x.q.flip(-1), x.k, x.v, x.dout)

    def prepare(self, case, x):
        raise Unsupported("seed test only")


if MODE == "oldproto":
    for line in sys.stdin:
        sys.stdout.write(PREFIX + json.dumps({"type": "hello", "protocol": 0, "name": "old", "inputs": "file"}) + "\n")
        sys.stdout.flush()
elif MODE == "badseed":
    serve(BadSeed())
else:
    serve(Faulty())
