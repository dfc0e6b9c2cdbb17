# SPDX-License-Identifier: MIT
"""The ``kdlens`` command from Python: run a verb on dumps, get its tables.

:func:`run` runs the program with ``--format json`` and returns a
:class:`Result`; :func:`read_per_sample` reads a ``--per-sample`` file.
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Union

import numpy as np

from . import _find
from ._table import Rows, tabulate

if TYPE_CHECKING:
    import pandas

__all__ = ["run", "Result", "CLIError", "read_per_sample", "PerSample"]

PathLike = Union[str, "os.PathLike[str]"]
# Verbs whose dumps are positional (kdlens cka A.h5 [B.h5], kdlens inspect FILE...);
# the others take -t TEACHER and -s STUDENT.
POSITIONAL = ("cka", "inspect")
# Verbs without a JSON document on stdout.
NO_DOCUMENT = ("report", "demo", "help")


class CLIError(RuntimeError):
    """``kdlens`` exited with a non-zero status: ``status`` (1 for a failure,
    2 for a usage error), ``stderr`` (its message) and ``args``."""

    def __init__(self, status: int, stderr: str, args: List[str]):
        self.status = status
        self.stderr = stderr
        self.args_ = args
        super().__init__(stderr.strip() or f"kdlens exited with status {status}")


class Result:
    """The JSON document of one ``kdlens VERB --format json`` run.

    ``doc`` is the whole document; ``command``, ``inputs``, ``notes`` its
    fields; ``tables`` the names of the tables in it; :meth:`table` one
    table.  ``stderr`` keeps what the program printed there (warnings).
    """

    def __init__(self, doc: Dict[str, Any], args: List[str], stderr: str = ""):
        self.doc = doc
        self.args = args
        self.stderr = stderr

    @property
    def command(self) -> str:
        return self.doc.get("command", "")

    @property
    def version(self) -> str:
        return self.doc.get("kdlens", "")

    @property
    def inputs(self) -> List[str]:
        return list(self.doc.get("inputs", []))

    @property
    def notes(self) -> List[str]:
        return list(self.doc.get("notes", []))

    @property
    def tables(self) -> List[str]:
        """Names of the tables in the document, in order."""
        return list(dict.fromkeys(r["table"] for r in self.doc.get("results", [])))

    def records(self, name: str) -> Rows:
        """The rows of table @name as dicts (keys as in the JSON, without "table")."""
        if name not in self.tables:
            raise KeyError(f"no table {name!r} in this {self.command} result; "
                           f"tables: {', '.join(self.tables) or 'none'}")
        return [{k: v for k, v in r.items() if k != "table"}
                for r in self.doc["results"] if r["table"] == name]

    def table(self, name: str) -> Union["pandas.DataFrame", Rows]:
        """Table @name as a pandas DataFrame, or a list of dicts without
        pandas.  A JSON null (a NaN or Inf value) is NaN in the DataFrame."""
        return tabulate(self.records(name))

    def __repr__(self) -> str:
        return f"Result(command={self.command!r}, tables={self.tables})"


def _option(name: str) -> str:
    return f"-{name}" if len(name) == 1 else "--" + name.replace("_", "-")


def _arguments(options: Dict[str, Any]) -> List[str]:
    args: List[str] = []
    for name, value in options.items():
        if name in ("f", "format"):
            raise ValueError("kdlens.run always asks for --format json")
        if value is None or value is False:
            continue
        args.append(_option(name))
        if value is True:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        args.append(os.fspath(value) if isinstance(value, os.PathLike) else str(value))
    return args


def run(verb: str, *files: PathLike, teacher: Optional[PathLike] = None,
        students: Iterable[PathLike] = (), **options: Any) -> Result:
    """Run ``kdlens VERB ... --format json`` and return its :class:`Result`.

    ``teacher`` and ``students`` become ``-t`` and ``-s`` (for ``cka`` and
    ``inspect``, whose dumps are positional, the first and following
    positional dumps); ``files`` are further positional arguments.  Every
    keyword is an option: ``temperature=[1, 4]`` is ``--temperature 1,4``,
    ``T=4`` is ``-T 4``, ``checkpoint="all"`` is ``--checkpoint all``,
    ``plan=True`` is ``--plan``; False and None leave an option out::

        r = kdlens.run("kl", teacher="teacher.h5", students=["student.h5"], T=[1, 4])
        r.table("kl")

    The program is found as :func:`kdlens.binary_path` says.  A non-zero
    exit raises :class:`CLIError` with the program's message.
    """
    if verb in NO_DOCUMENT:
        raise ValueError(f"kdlens {verb} writes no JSON document; run the program itself "
                         f"({_find.binary_path()} {verb} ...)")
    students = [os.fspath(s) for s in students]
    args = [_find.binary_path(), verb]
    if verb in POSITIONAL:
        args += ([os.fspath(teacher)] if teacher is not None else []) + students
    else:
        if teacher is not None:
            args += ["-t", os.fspath(teacher)]
        for s in students:
            args += ["-s", s]
    args += [os.fspath(f) for f in files]
    args += _arguments(options) + ["--format", "json"]
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise CLIError(p.returncode, p.stderr, args)
    return Result(json.loads(p.stdout), args, p.stderr)


# ---- per-sample files ---------------------------------------------------------------------

def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class PerSample:
    """A ``--per-sample`` file: ``attrs`` (the root's attributes),
    ``sample_ids`` (``/sample_ids``, or None without it), ``datasets``
    (every dataset by its path, e.g. ``"students/0/checkpoints/final/kl"``, [N, T])
    and ``groups`` (each group's attributes by its path)."""

    def __init__(self, path: str, attrs: Dict[str, Any], datasets: Dict[str, Any],
                 groups: Dict[str, Dict[str, Any]]):
        self.path = path
        self.attrs = attrs
        self.datasets = datasets
        self.groups = groups
        ids = datasets.get("sample_ids")
        self.sample_ids = ids if ids is not None and getattr(ids, "ndim", 0) == 1 else None

    def table(self) -> Union["pandas.DataFrame", Rows]:
        """The file as one tidy table (docs/conventions.md, "Per-sample
        files"): a row per sample, student checkpoint and temperature, with
        the checkpoint group's attributes (``student``, ``checkpoint``,
        ``teacher_checkpoint``), ``tau``, ``sample_id``, ``label`` (when the
        file has ``/labels``) and one column per value.  A pandas DataFrame,
        or a list of dicts without pandas."""
        ids = self.datasets.get("sample_ids")
        labels = self.datasets.get("labels")
        taus = self.datasets.get("tau")
        rows: Rows = []
        frames = []
        for group in sorted(self.groups):
            parts = group.split("/")
            if len(parts) != 4 or parts[0] != "students" or parts[2] != "checkpoints":
                continue
            values = {path[len(group) + 1:]: v for path, v in self.datasets.items()
                      if path.startswith(group + "/") and "/" not in path[len(group) + 1:]}
            if not values:
                continue
            head = {k: v for k, v in self.groups[group].items() if not isinstance(v, list)}
            for j, tau in enumerate(taus if taus is not None else [None]):
                cols = {"tau": tau, "sample_id": ids}
                if labels is not None:
                    cols["label"] = labels
                cols.update({name: v[:, j] for name, v in values.items()})
                frames.append((head, cols))
        try:
            import pandas
        except ImportError:
            for head, cols in frames:
                n = len(cols["sample_id"])
                rows += [{**head, **{c: _text(v if c == "tau" else v[i]) for c, v in cols.items()}}
                         for i in range(n)]
            return rows
        dfs = []
        for head, cols in frames:
            n = len(cols["sample_id"])
            dfs.append(pandas.DataFrame({**{k: [v] * n for k, v in head.items()},
                                         **{c: ([v] * n if c == "tau" else v)
                                            for c, v in cols.items()}}))
        return pandas.concat(dfs, ignore_index=True) if dfs else pandas.DataFrame()

    def __repr__(self) -> str:
        return f"PerSample({self.path!r}, {len(self.datasets)} datasets)"


def read_per_sample(path: PathLike) -> PerSample:
    """Read a ``--per-sample OUT.h5`` file of ``kdlens kl`` or ``kdlens split``
    (needs h5py): every dataset and attribute, and :meth:`PerSample.table`
    as one tidy table."""
    import h5py

    datasets: Dict[str, Any] = {}
    groups: Dict[str, Dict[str, Any]] = {}
    with h5py.File(os.fspath(path), "r") as f:
        groups[""] = {k: _text(v) for k, v in f.attrs.items()}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets[name] = obj[()]
            else:
                groups[name] = {k: _text(v) for k, v in obj.attrs.items()}

        f.visititems(visit)
    return PerSample(os.fspath(path), groups[""], datasets, groups)
