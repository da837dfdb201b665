#!/usr/bin/env python3
"""Loader stubs that let the PyPI torch wheel (a CUDA 13 build) be imported on a machine without the
~2.2 GB of nvidia-* wheels, for the CPU test path of the external-kernel protocol (launch/setup).

`import torch` loads libtorch_cuda.so, whose NEEDED list names cuBLAS, cuDNN, NCCL, cuSPARSE, cuFFT,
cuRAND, cuFile, cuSPARSELt and NVSHMEM. A CPU process never calls into them, but the dynamic loader
must find a file for every NEEDED name, a version definition for every versioned reference
(`cublasCreate_v2@libcublas.so.13`) and an address for every symbol bound at load time. This script
builds, for each NEEDED library that is not present, a stub with that SONAME and version node that
defines exactly the symbols the torch libraries reference and cannot find elsewhere. Every stub
function prints which library and symbol was called and aborts: a CPU code path that reached CUDA
would fail loudly, never compute something.

Only what `import torch` loads is followed (from the objects named on the command line through
their NEEDED lists): libraries torch opens later with dlopen (libcuda.so.1 from the CUDA runtime,
NVRTC, cuSOLVER) are deliberately not stubbed, so `torch.cuda.is_available()` finds no driver and
answers False as on any machine without a GPU.

usage: cpu-torch-stubs.py OUT_DIR LIB_DIR... -- ROOT_SO...
  LIB_DIR   directories holding the real libraries (torch/lib, nvidia/cu13/lib)
  ROOT_SO   what `import torch` opens (torch/_C.*.so, torch/lib/libtorch_global_deps.so)
"""

import os
import re
import subprocess
import sys


def readelf(args, path):
    return subprocess.run(["readelf", *args, path], check=True, capture_output=True, text=True).stdout


def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf(["-dW"], path))


def dynsyms(path):
    """(defined names, undefined [(name, version or None, type, bind)]) of a shared object."""
    defined, undefined = set(), []
    for line in readelf(["--dyn-syms", "-W"], path).splitlines():
        f = line.split()
        if len(f) < 8 or not f[0].endswith(":"):
            continue
        typ, bind, ndx, full = f[3], f[4], f[6], f[7]
        name, _, ver = full.partition("@")
        ver = ver.lstrip("@") or None
        if ndx == "UND":
            if name:
                undefined.append((name, ver, typ, bind))
        else:
            defined.add(name)
    return defined, undefined


def version_needs(path):
    """{version name: library file} from the object's version-needs section."""
    needs, current = {}, None
    for line in readelf(["-VW"], path).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Name: (\S+)\s+Flags", line)
        if m and current:
            needs[m.group(1)] = current
    return needs


def system_libs():
    out = subprocess.run(["ldconfig", "-p"], check=True, capture_output=True, text=True).stdout
    libs = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and "x86-64" in m.group(2):
            libs.setdefault(m.group(1), m.group(3))
    return libs


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    out_dir, lib_dirs = argv[0], argv[1:]
    present = {}
    for d in lib_dirs:
        for f in sorted(os.listdir(d)):
            if ".so" in f:
                present.setdefault(f, os.path.join(d, f))
    sysl = system_libs()
    missing, seen, queue = set(), set(), list(extra)
    loaded = []
    while queue:
        p = queue.pop()
        if p in seen:
            continue
        seen.add(p)
        loaded.append(p)
        for n in needed(p):
            path = present.get(n) or sysl.get(n)
            if path:
                queue.append(path)
            else:
                missing.add(n)
    defined, refs, ver_lib = set(), [], {}
    for p in loaded:
        d, u = dynsyms(p)
        defined |= d
        refs.extend(u)
        ver_lib.update({v: f for v, f in version_needs(p).items() if f in missing})
    # per missing library: {version node: {(name, type)}}; None = unversioned references, which
    # bind to a definition in whichever loaded library has it, so every stub carries them.
    versioned = {m: {} for m in missing}
    unversioned = set()
    for name, ver, typ, bind in refs:
        if ver in ver_lib:
            versioned[ver_lib[ver]].setdefault(ver, set()).add((name, typ))
        elif ver is None and bind != "WEAK" and name not in defined:
            unversioned.add((name, typ))
    os.makedirs(out_dir, exist_ok=True)
    for lib in sorted(missing):
        nodes = versioned[lib]
        names_in_nodes = {n for syms in nodes.values() for n, _ in syms}
        loose = {(n, t) for n, t in unversioned if n not in names_in_nodes}
        kinds = {}
        for n, t in sorted({s for v in nodes.values() for s in v} | loose):
            kinds[n] = "OBJECT" if t == "OBJECT" or kinds.get(n) == "OBJECT" else t
        syms = sorted(kinds.items())
        src = [
            "#include <stdio.h>",
            "#include <stdlib.h>",
            "static void stub_called(const char *sym) {",
            f'  fprintf(stderr, "attnbench CPU torch: {lib} is a loader stub; %s was called (this Python torch has no CUDA libraries)\\n", sym);',
            "  abort();",
            "}",
        ]
        for i, (name, typ) in enumerate(syms):
            if typ == "OBJECT":
                src.append(f'char stub_obj_{i}[256] __asm__("{name}");')
            else:
                src.append(f'void stub_fn_{i}(void) __asm__("{name}");')
                src.append(f'void stub_fn_{i}(void) {{ stub_called("{name}"); }}')
        c_path = os.path.join(out_dir, lib + ".c")
        with open(c_path, "w") as fh:
            fh.write("\n".join(src) + "\n")
        cmd = ["cc", "-shared", "-fPIC", "-O0", "-o", os.path.join(out_dir, lib), c_path, f"-Wl,-soname,{lib}"]
        if nodes:
            # Each referenced version node lists its symbols; the unversioned ones go with the first
            # node (an unversioned reference binds to the default version).
            script = ""
            for k, (ver, vs) in enumerate(sorted(nodes.items())):
                names = sorted({n for n, _ in vs} | ({n for n, _ in loose} if k == 0 else set()))
                script += f"{ver} {{ global: {' '.join(n + ';' for n in names)} }};\n"
            map_path = os.path.join(out_dir, lib + ".map")
            with open(map_path, "w") as fh:
                fh.write(script)
            cmd.append(f"-Wl,--version-script={map_path}")
        subprocess.run(cmd, check=True)
        print(f"{lib}: {len(syms)} symbols")


if __name__ == "__main__":
    main()
