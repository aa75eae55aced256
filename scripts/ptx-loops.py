#!/usr/bin/env python3
"""PTX instructions in the loops of a CUDA artifact's kernels, for docs/cuda.md's figures.

    scripts/ptx-loops.py ARTIFACT.kvp [REGEX] [--arch sm_90a] [--kvplan build/bin/kvplan]

Takes the artifact's generated source (`kvplan inspect --section cuda.source`), keeps the
extern "C" wrappers whose name matches REGEX (all by default), compiles them with nvcc to
PTX and that PTX to a cubin (`-Xptxas -v`), and prints for each kernel its registers, spills,
and its loops, largest first: the instructions between a loop's label and its backward branch
(inline-asm braces stripped; `mov`s, labels and declarations not counted) and its global
loads by width in bytes. The figures in docs/cuda.md divide a kernel's main loop by the
weight bytes a lane loads in one pass of it (from the loads listed: the weights' loads are
the ones the format reads, e.g. 16-byte loads of codes).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

WIDTH = {'8': 1, '16': 2, '32': 4, '64': 8}


def loops(entry):
    """(instructions, {load bytes: count}) of each loop of one .entry's PTX, largest first."""
    lines = [l.strip() for l in entry.split('\n')]
    labels = {}
    for i, l in enumerate(lines):
        m = re.match(r'^(\$\w+):', l)
        if m:
            labels[m.group(1)] = i
    found = []
    for i, l in enumerate(lines):
        m = re.search(r'bra(?:\.uni)?\s+(\$\w+);', l)
        if not m or m.group(1) not in labels or labels[m.group(1)] >= i:
            continue
        count, loads = 0, {}
        for x in lines[labels[m.group(1)] + 1:i + 1]:
            x = x.strip('{} \t')
            if not x or x.startswith(('$', '//', '.reg', 'mov')):
                continue
            count += 1
            ld = re.match(r'ld\.global(?:\.\w+)*?(?:\.v([24]))?\.[a-z]+(8|16|32|64)\s', x)
            if ld:
                width = WIDTH[ld.group(2)] * (int(ld.group(1)) if ld.group(1) else 1)
                loads[width] = loads.get(width, 0) + 1
        found.append((count, loads))
    return sorted(found, key=lambda f: -f[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('artifact')
    ap.add_argument('regex', nargs='?', default='')
    ap.add_argument('--arch', default='sm_90a')
    ap.add_argument('--kvplan', default=os.path.join(os.path.dirname(__file__), '..', 'build',
                                                      'bin', 'kvplan'))
    ap.add_argument('--nvcc', default=os.environ.get('NVCC', '/usr/local/cuda/bin/nvcc'))
    a = ap.parse_args()
    source = subprocess.run([a.kvplan, 'inspect', a.artifact, '--section', 'cuda.source'],
                            check=True, capture_output=True, text=True).stdout
    wrapper = re.compile(r'^extern "C" __global__ .*? (\w+)\(KvArgs a\)')
    kept, names = [], []
    for line in source.split('\n'):
        m = wrapper.match(line)
        if m is None:
            kept.append(line)
        elif re.search(a.regex, m.group(1)):
            kept.append(line)
            names.append(m.group(1))
    if not names:
        sys.exit(f'ptx-loops: no kernel of {a.artifact} matches {a.regex!r}')
    with tempfile.TemporaryDirectory() as tmp:
        cu = os.path.join(tmp, 'k.cu')
        with open(cu, 'w') as f:
            f.write('\n'.join(kept))
        flags = ['-O3', '-std=c++17', f'-arch={a.arch}']
        subprocess.run([a.nvcc, '-ptx', *flags, cu, '-o', os.path.join(tmp, 'k.ptx')], check=True)
        # The same PTX through ptxas (the front end runs once).
        ptxas = subprocess.run([a.nvcc, '-cubin', f'-arch={a.arch}', '-Xptxas', '-v',
                                os.path.join(tmp, 'k.ptx'), '-o', os.path.join(tmp, 'k.cubin')],
                               check=True, capture_output=True, text=True).stderr
        ptx = open(os.path.join(tmp, 'k.ptx')).read()
    # ptxas lists each function's properties under "Function properties for
    # NAME", the entry's and then those of a function it calls (not inlined:
    # l2PrefetchRange), so a figure belongs to the last NAME seen.
    usage, current = {}, None
    for line in ptxas.split('\n'):
        m = re.search(r"(?:entry function '|Function properties for )(\w+)", line)
        if m:
            current = m.group(1)
        m = re.search(r'(\d+) bytes spill stores', line)
        if m and current:
            usage.setdefault(current, {})['spills'] = int(m.group(1))
        m = re.search(r'Used (\d+) registers', line)
        if m and current:
            usage.setdefault(current, {})['registers'] = int(m.group(1))
    for entry in re.split(r'\n(?=\.visible \.entry)', ptx)[1:]:
        name = re.search(r'\.entry\s+(\w+)', entry).group(1)
        u = usage.get(name, {})
        shown = ', '.join(f'{n} instructions, loads {dict(sorted(l.items()))}'
                          for n, l in loops(entry)[:3]) or 'no loop'
        print(f"{name}: {u.get('registers', '?')} registers, {u.get('spills', 0)} bytes spilled;"
              f' loops: {shown}')


if __name__ == '__main__':
    main()
