#!/usr/bin/env python3
"""Parse nccl-tests output (all_reduce_perf & co.) the way the common scripts do, and print
one JSON object: the rows and the summary lines.

    ./build/all_reduce_perf -b 8 -e 128M -f 2 -g 8 | python3 parse_nccl_tests.py
    oxccl-bench all-reduce --ranks 2 | python3 parse_nccl_tests.py -

Columns are picked by position, as in most parsers of nccl-tests logs: a data row is a line
that does not start with '#' and has at least 13 fields, size count type redop root, then
time algbw busbw #wrong out of place and the same four in place. Extra trailing columns are
ignored. `# Avg bus bandwidth : X` and `# Out of bounds values : N OK|FAILED` are read by
splitting on ':'.  Exits 1 when nothing parses or a row has a non-numeric field.
"""
import json
import sys

FIELDS = ("time", "algbw", "busbw", "wrong")


def number(s):
    return None if s == "N/A" else float(s)


def parse(lines):
    rows, summary = [], {}
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("#"):
            if "Avg bus bandwidth" in line:
                summary["avg_busbw"] = float(line.split(":")[1].split()[0])
            elif "Out of bounds values" in line:
                n, status = line.split(":")[1].split()[:2]
                summary["out_of_bounds"] = int(n)
                summary["status"] = status
            continue
        parts = line.split()
        if len(parts) < 13:
            continue
        row = {
            "size": int(parts[0]),
            "count": int(parts[1]),
            "type": parts[2],
            "redop": parts[3],
            "root": int(parts[4]),
        }
        for half, offset in (("oop", 5), ("ip", 9)):
            for i, name in enumerate(FIELDS):
                row[f"{half}_{name}"] = number(parts[offset + i])
        rows.append(row)
    return rows, summary


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "-"
    f = sys.stdin if path == "-" else open(path)
    rows, summary = parse(f)
    if not rows or "avg_busbw" not in summary:
        print("no nccl-tests rows or no '# Avg bus bandwidth' line", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"rows": rows, **summary}))


if __name__ == "__main__":
    main()
