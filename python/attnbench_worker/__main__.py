"""python -m attnbench_worker NAME   serve the built-in adapter NAME on stdin/stdout
python -m attnbench_worker --probe  print one JSON line: every built-in adapter, available or why not"""

import json
import sys

from .adapters import ADAPTERS, load
from .helper import PROTOCOL, serve


def main(argv):
    if argv == ["--probe"]:
        rows = []
        for name in ADAPTERS:
            a = load(name)
            ok, reason, version = a.availability()
            rows.append({"name": name, "summary": a.summary, "available": ok, "reason": reason, "version": version, "inputs": a.inputs})
        print(json.dumps({"protocol": PROTOCOL, "python": sys.version.split()[0], "adapters": rows}))
        return 0
    if len(argv) != 1 or argv[0] not in ADAPTERS:
        sys.stderr.write(f"usage: python -m attnbench_worker NAME | --probe   (NAME: {', '.join(ADAPTERS)})\n")
        return 2
    serve(load(argv[0]))
    return 0


sys.exit(main(sys.argv[1:]))
