"""Independent timing of the MPI collectives `attnbench comm` times, with mpi4py (tests/comm_mpi4py.rs).

Run under `launch/mpirun -np N python3.11 -s comm_timing.py WARMUP ITERS CYCLES OP:BYTES ...`; rank 0
prints one JSON object {"op:bytes": [time_us of each cycle], ...}. Sizes follow attnbench comm's `bytes` column (the all-reduce
buffer, the gathered buffer of all-gather, the whole per-rank buffer of all-to-all); f32 elements.
Timing as attnbench and nccl-tests do: buffers allocated once, WARMUP untimed calls, a barrier, then
ITERS calls back to back between two MPI.Wtime() readings; the time is that span / ITERS, the slowest
rank's. The whole list is timed CYCLES times (attnbench comm --cycles, nccl-tests' -N). Buffers are Python `array('f')` (the buffer protocol; no numpy needed).
"""
import json
import sys
from array import array

from mpi4py import MPI


def main():
    comm = MPI.COMM_WORLD
    n = comm.Get_size()
    warmup, iters, cycles = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    out = {}
    for spec in [s for _ in range(cycles) for s in sys.argv[4:]]:
        op, nbytes = spec.split(":")
        elems = int(nbytes) // 4
        if op == "allreduce":
            send, recv = array("f", [1.0]) * elems, array("f", [0.0]) * elems
            call = lambda: comm.Allreduce(send, recv, op=MPI.SUM)
        elif op == "allgather":
            send, recv = array("f", [1.0]) * (elems // n), array("f", [0.0]) * elems
            call = lambda: comm.Allgather(send, recv)
        elif op == "alltoall":
            send, recv = array("f", [1.0]) * elems, array("f", [0.0]) * elems
            call = lambda: comm.Alltoall(send, recv)
        else:
            raise SystemExit(f"unknown op {op}")
        for _ in range(warmup):
            call()
        comm.Barrier()
        t0 = MPI.Wtime()
        for _ in range(iters):
            call()
        t = (MPI.Wtime() - t0) / iters
        out.setdefault(spec, []).append(comm.allreduce(t, op=MPI.MAX) * 1e6)
    if comm.Get_rank() == 0:
        print(json.dumps(out))


main()
