# SPDX-License-Identifier: MIT
"""What the tests of kdlens under mpirun share (tests/mpi/): where things
are, and running kdlens on P processes.  Needs MPIRUN (the mpirun program)
in the environment."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

MPIRUN = os.environ.get("MPIRUN", "mpirun")
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "example")
SYNTH = os.environ.get("KDL_SYNTH", "kdl-synth")
PS = (1, 2, 3, 4)
# One BLAS thread: a threaded BLAS rounds a product differently from run to run.
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMPI_MCA_btl="self,vader")


def mpirun(p, *args):
    """kdlens ARGS on @p processes: (status, stdout, stderr)."""
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(p), kt.KDLENS,
           *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    return r.returncode, r.stdout, r.stderr


def ours(stderr):
    """stderr without mpirun's own framed notices (a non-zero exit is reported
    by mpirun between lines of dashes): what kdlens wrote."""
    keep, framed = [], False
    for line in stderr.splitlines():
        if line.startswith("-----"):
            framed = not framed
            continue
        if not framed:
            keep.append(line)
    return "\n".join(l for l in keep if l.strip())
