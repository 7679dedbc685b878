"""One persistence protocol for every results object: compute once → save a folder → load and plot.

A results folder holds ``result.json`` (``kind``, ``version`` and the object's JSON fields) and, when
the object has arrays or tables, ``arrays.npz`` (no pickles). ``result.json`` is written last, so a
folder without it is an interrupted save. Subclasses set :attr:`Results.kind` and
:attr:`Results.version` and implement three hooks::

    class MyResult(Results):
        kind = "my-result"
        version = 1

        def _fields(self) -> dict[str, Any]: ...            # JSON-safe scalars, lists, dicts
        def _arrays(self) -> dict[str, np.ndarray]: ...     # optional numeric/text arrays
        @classmethod
        def _from_saved(cls, fields, arrays) -> MyResult: ...

:func:`load_results` reads any folder and dispatches on its ``kind`` (the kinds registered so far:
a class registers when its module is imported). Tables (``pandas.DataFrame``) travel as arrays with
:func:`frame_to_arrays` / :func:`frame_from_arrays`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from workbench.errors import ResultsError
from workbench.io import read_json_object, write_json, write_npz

RESULT_FILE = "result.json"
ARRAYS_FILE = "arrays.npz"

#: kind → results class (filled as each subclass is defined)
RESULT_KINDS: dict[str, type[Results]] = {}

R = TypeVar("R", bound="Results")


class Results:
    """Base class of persisted results objects (see the module docstring)."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is not None:
            if kind in RESULT_KINDS and RESULT_KINDS[kind].__qualname__ != cls.__qualname__:
                raise TypeError(f"results kind '{kind}' is already used by {RESULT_KINDS[kind].__qualname__}")
            RESULT_KINDS[kind] = cls

    # -- hooks -------------------------------------------------------------------------------
    def _fields(self) -> dict[str, Any]:
        """The JSON fields (no ``kind``/``version``)."""
        raise NotImplementedError

    def _arrays(self) -> dict[str, np.ndarray]:
        """Arrays saved in ``arrays.npz`` (none by default)."""
        return {}

    @classmethod
    def _from_saved(cls: type[R], fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> R:
        """Rebuild the object from what :meth:`save` wrote."""
        raise NotImplementedError

    # -- protocol ----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the result into ``folder`` (created; each file atomic, ``result.json`` last)."""
        out = Path(folder)
        if out.exists() and not out.is_dir():
            raise ResultsError(f"{out}: results are saved in a folder, and this is a file")
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULT_FILE).unlink(missing_ok=True)  # incomplete until rewritten last
        arrays = {k: np.asarray(v) for k, v in self._arrays().items()}
        for k, v in arrays.items():
            if v.dtype.hasobject:
                raise ResultsError(f"{type(self).__name__}: array '{k}' holds Python objects (not saveable)")
        if arrays:
            write_npz(out / ARRAYS_FILE, arrays)
        else:
            (out / ARRAYS_FILE).unlink(missing_ok=True)
        fields = self._fields()
        clash = {"kind", "version", "arrays"} & set(fields)
        if clash:
            raise ResultsError(f"{type(self).__name__}: field '{sorted(clash)[0]}' is reserved")
        write_json(out / RESULT_FILE, {"kind": self.kind, "version": self.version, "arrays": sorted(arrays),
                                       **fields})
        return out

    @classmethod
    def load(cls: type[R], folder: str | Path) -> R:
        """Read a folder written by :meth:`save` (nothing is recomputed)."""
        fields, arrays = read_results(folder, cls.kind, cls.version)
        try:
            return cls._from_saved(fields, arrays)
        except ResultsError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultsError(f"{folder}: damaged {cls.kind} result ({type(exc).__name__}: {exc})") from None


def read_results(folder: str | Path, kind: str | None = None, version: int | None = None
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(fields, arrays)`` of a results folder, checked against ``kind`` and the newest known
    ``version``; every problem is one :class:`ResultsError` line."""
    src = Path(folder)
    js = src / RESULT_FILE
    if not src.is_dir():
        raise ResultsError(f"{src}: no saved results here (a results object is a folder with {RESULT_FILE})")
    if not js.is_file():
        raise ResultsError(f"{src}: no {RESULT_FILE} (not a results folder, an interrupted save, or a result "
                           "written by an older workbench: recompute it)")
    fields = read_json_object(js, "results file")
    found = fields.pop("kind", None)
    found_version = fields.pop("version", None)
    names = fields.pop("arrays", [])
    if not isinstance(found, str) or not isinstance(found_version, int) or not isinstance(names, list):
        raise ResultsError(f"{js}: not a results file (no kind/version)")
    if kind is not None and found != kind:
        raise ResultsError(f"{src}: holds a '{found}' result, not a '{kind}' result")
    newest = version if version is not None else getattr(RESULT_KINDS.get(found), "version", None)
    if newest is not None and found_version > newest:
        raise ResultsError(f"{src}: '{found}' result version {found_version} is newer than this workbench "
                           f"reads ({newest}); update the workbench")
    arrays: dict[str, np.ndarray] = {}
    if names:
        npz = src / ARRAYS_FILE
        if not npz.is_file():
            raise ResultsError(f"{src}: {ARRAYS_FILE} is missing ({len(names)} arrays expected)")
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ResultsError(f"{npz}: damaged arrays file ({type(exc).__name__})") from None
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ResultsError(f"{npz}: array '{missing[0]}' is missing ({len(missing)} of {len(names)})")
    return fields, arrays


def load_results(folder: str | Path) -> Results:
    """Load any results folder, dispatching on its ``kind`` through :data:`RESULT_KINDS`."""
    src = Path(folder)
    if not (src / RESULT_FILE).is_file():
        read_results(src)  # raises the folder's one-line error
    kind = read_json_object(src / RESULT_FILE, "results file").get("kind")
    if not isinstance(kind, str) or kind not in RESULT_KINDS:
        known = ", ".join(sorted(RESULT_KINDS)) or "none imported"
        raise ResultsError(f"{folder}: unknown results kind '{kind}' (known: {known}; import the module that "
                           "defines it)")
    return RESULT_KINDS[kind].load(folder)


# -- tables as arrays ------------------------------------------------------------------------------

def frame_to_arrays(name: str, df: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Columns of ``df`` as pickle-free arrays ``name.<i>`` (+ ``name.<i>.na`` null masks) and the JSON
    spec (column names, dtypes) that :func:`frame_from_arrays` needs."""
    arrays: dict[str, np.ndarray] = {}
    columns, dtypes = [], []
    for i, col in enumerate(df.columns):
        s = df[col]
        na = s.isna().to_numpy(dtype=bool)
        if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
            np_dtype = getattr(s.dtype, "numpy_dtype", s.dtype)
            fill = np.nan if np.dtype(np_dtype).kind in "fc" else 0
            values = s.to_numpy(dtype=np_dtype, na_value=fill)
        else:
            values = np.asarray(["" if m else str(v) for v, m in zip(s.tolist(), na)], dtype=str)
        arrays[f"{name}.{i}"] = values
        if na.any():
            arrays[f"{name}.{i}.na"] = na
        columns.append(str(col))
        dtypes.append(str(s.dtype))
    return arrays, {"columns": columns, "dtypes": dtypes, "n": int(len(df))}


def frame_from_arrays(name: str, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """The DataFrame written by :func:`frame_to_arrays`."""
    data: dict[str, Any] = {}
    for i, (col, dtype) in enumerate(zip(spec["columns"], spec["dtypes"])):
        values = arrays[f"{name}.{i}"]
        na = arrays.get(f"{name}.{i}.na")
        if values.dtype.kind == "U":
            s = pd.Series(values.astype(object))
            if na is not None:
                s[na] = None
            data[col] = s if dtype == "object" else s.astype(dtype)
        else:
            s = pd.Series(values).astype(dtype)
            if na is not None:
                s[na] = None
            data[col] = s
    return pd.DataFrame(data, index=pd.RangeIndex(int(spec["n"])))


__all__ = ["ARRAYS_FILE", "RESULT_FILE", "RESULT_KINDS", "Results", "frame_from_arrays", "frame_to_arrays",
           "load_results", "read_results"]
