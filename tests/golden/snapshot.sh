#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Write every command's JSON on the bundled example, and the report's data/, into DIR,
# so that two builds can be compared byte for byte (a refactor must change nothing):
#   tests/golden/snapshot.sh build-old/analysis/kdlens /tmp/before
#   tests/golden/snapshot.sh build/analysis/kdlens /tmp/after
#   diff -r /tmp/before /tmp/after && echo identical
# The JSON names its inputs by path: to compare two checkouts, point both at one copy of the
# example with KDL_GOLDEN_EXAMPLE=/path/to/datasets/example.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 KDLENS DIR" >&2; exit 2; }
k=$1 out=$2
ex=${KDL_GOLDEN_EXAMPLE:-$(cd "$(dirname "$0")/../../datasets/example" && pwd)}
t=$ex/teacher.h5
s=("$ex/student_ce.h5" "$ex/student_kd.h5" "$ex/student_narrow.h5")
mkdir -p "$out"
j() { local name=$1; shift; "$k" "$@" --format json >"$out/$name.json"; }
j kl      kl -t "$t" "${s[@]/#/-s}" --checkpoint all -T 1,4
j split   split -t "$t" "${s[@]/#/-s}" --checkpoint all
j cka     cka "$t" "${s[1]}" --checkpoint all
j cka-t   cka "$t"
j layers  layers -t "$t" -s "${s[0]}" --checkpoint all
j dims    dims -t "$t" -s "${s[0]}" -s "${s[2]}" --checkpoint all
j inspect inspect "$t" "${s[@]}"
"$k" report -t "$t" -s "${s[0]}" -s "${s[1]}" -s "${s[2]}" -o "$out/report" --quiet
rm -rf "$out/report-data"
mv "$out/report/data" "$out/report-data"
rm -rf "$out/report"
