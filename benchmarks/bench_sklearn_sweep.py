"""Sweep every scikit-learn estimator through ``packserve.pack`` (issue #19). Not a test.

    python benchmarks/bench_sklearn_sweep.py [--only NAME,NAME] [--list] [--json out.json]

For each class in ``sklearn.utils.all_estimators()``: construct it (defaults, or the first
parameter set scikit-learn's own common tests use when the class needs arguments, e.g. a
meta-estimator's ``estimator``), fit it on small synthetic data (300 rows, 6 non-negative
features; binary labels for classifiers, a float target for regressors, a 2-column target
when the estimator only takes multi-output), pack it with a 60-row sample, and sort the
result into:

- ``packed``: written; then checked again on 200 held-out rows the pack never saw
  (``wrong`` counts the packed ones whose held-out predictions disagree),
- ``refused``: a packserve error (``PackserveError``) — grouped by its message, which is the
  reason a user reads,
- ``crashed``: any other exception reaching the caller (a raw converter or framework error:
  a bug in packserve's error handling),
- ``skipped``: the estimator could not be built or fitted on this data (not packserve's doing).

Runs single-threaded, one estimator at a time, each bounded by a 60 s alarm.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore")

N_FIT, N_SAMPLE, N_HELD = 300, 60, 200


class _Timeout(BaseException):  # not an Exception: nothing may wrap it
    pass


def _alarm(_sig: int, _frm: Any) -> None:
    raise _Timeout()


def data() -> dict[str, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=N_FIT + N_HELD, n_features=6, n_informative=4, random_state=0
    )
    x = x - x.min(axis=0)  # non-negative: the naive Bayes / chi2 family need it
    rng = np.random.default_rng(0)
    yr = x @ rng.normal(size=6) + rng.normal(scale=0.1, size=len(x)) + 3.0
    return {"x": x, "y": y, "yr": yr, "y2": np.c_[y, (x[:, 0] > np.median(x[:, 0])).astype(int)],
            "yr2": np.c_[yr, yr * 0.5 + x[:, 1]]}


def construct(cls: type) -> Any:
    from sklearn.utils._test_common.instance_generator import INIT_PARAMS

    params = INIT_PARAMS.get(cls)
    if isinstance(params, list):
        params = params[0]
    return cls(**(params or {}))


def fit(est: Any, kind: str, d: dict[str, np.ndarray]) -> Any:
    x = d["x"][:N_FIT]
    ys = {"classifier": ["y", "y2"], "regressor": ["yr", "yr2"]}.get(kind, ["y", None])
    last: Exception | None = None
    for key in ys:
        try:
            return est.fit(x) if key is None else est.fit(x, d[key][:N_FIT])
        except Exception as exc:  # try the next target shape
            last = exc
    assert last is not None
    raise last


def held_out_agrees(est: Any, path: Path, x: np.ndarray) -> bool:
    import packserve

    pred = packserve.load(path).predict(x)
    if pred.outputs is not None:  # named outputs: label vs predict(), output vs transform()
        if "label" in pred.outputs:
            want_l = np.asarray(est.predict(x))
            want_l = want_l.astype(np.int64) if want_l.dtype.kind == "b" else want_l
            got_l = pred.outputs["label"]
            got_l = got_l.astype(np.int64) if got_l.dtype.kind == "b" else got_l
            return bool(np.all(got_l.reshape(want_l.shape).astype(str) == want_l.astype(str)))
        t = est.transform(x)
        want = np.asarray(t.toarray() if hasattr(t, "toarray") else t, dtype=np.float64)
        got = pred.outputs["output"].astype(np.float64).reshape(want.shape)
        return bool(np.max(np.abs(got - want)) <= 1e-5 * max(1.0, float(np.abs(want).max())))
    if pred.values is not None and hasattr(est, "predict"):
        want = np.asarray(est.predict(x), dtype=np.float64)
        tol = 1e-5 * max(float(np.mean(np.abs(want))), 1e-12)
        return bool(np.max(np.abs(pred.values.reshape(want.shape) - want)) <= max(tol, 1e-5))
    if pred.labels is not None and hasattr(est, "predict"):
        return bool(np.all(pred.labels.astype(str) == np.asarray(est.predict(x)).astype(str)))
    return True  # kinds the sweep does not know how to re-check


def one(name: str, cls: type, d: dict[str, np.ndarray], root: Path) -> tuple[str, str]:
    from sklearn.base import is_classifier, is_regressor

    import packserve
    from packserve.errors import PackserveError

    try:
        est = construct(cls)
    except Exception as exc:
        return "skipped", f"cannot construct: {type(exc).__name__}"
    kind = "classifier" if is_classifier(est) else "regressor" if is_regressor(est) else "other"
    try:
        fit(est, kind, d)
    except Exception as exc:
        return "skipped", f"cannot fit: {type(exc).__name__}"
    out = root / name
    try:
        res = packserve.pack(est, out, sample=d["x"][N_FIT:N_FIT + N_SAMPLE], force=True)
    except PackserveError as exc:
        return "refused", f"{exc.code}: {exc.message}"
    except Exception as exc:
        return "crashed", f"{type(exc).__name__}: {str(exc)[:160]}"
    try:
        ok = held_out_agrees(est, res.path, d["x"][N_FIT:])
    except Exception as exc:
        return "wrong", f"held-out check raised {type(exc).__name__}: {str(exc)[:120]}"
    return ("packed", f"task={res.manifest.task}") if ok else ("wrong", "held-out disagrees")


def reason_key(reason: str) -> str:
    """Group messages that differ only by the estimator's name or numbers."""
    key = re.sub(r"\b[A-Z][A-Za-z0-9]+(?:CV)?\b", "<Est>", reason)
    key = re.sub(r"[-+]?\d[\d.e+-]*", "<n>", key)
    return key[:150]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated class names")
    ap.add_argument("--list", action="store_true", help="print one line per estimator")
    ap.add_argument("--json", default="", help="write {name: [outcome, reason]} here")
    args = ap.parse_args()
    from sklearn.utils import all_estimators

    only = {s for s in args.only.split(",") if s}
    ests = [(n, c) for n, c in all_estimators() if not only or n in only]
    d = data()
    signal.signal(signal.SIGALRM, _alarm)
    results: dict[str, tuple[str, str]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, cls in ests:
            signal.alarm(60)
            try:
                results[name] = one(name, cls, d, Path(tmp))
            except _Timeout:
                results[name] = ("skipped", "over 60 s")
            finally:
                signal.alarm(0)
            if args.list:
                print(f"{name:<36} {results[name][0]:<8} {results[name][1][:150]}", flush=True)
    counts = collections.Counter(o for o, _ in results.values())
    print(f"\n== {len(results)} scikit-learn estimators in {time.perf_counter() - t0:.0f} s ==")
    for outcome in ("packed", "wrong", "refused", "crashed", "skipped"):
        print(f"{outcome:<8} {counts.get(outcome, 0):4d}")
    for outcome in ("wrong", "refused", "crashed"):
        groups: dict[str, list[str]] = collections.defaultdict(list)
        for n, (o, r) in results.items():
            if o == outcome:
                groups[reason_key(r)].append(n)
        if groups:
            print(f"\n-- {outcome}, by reason --")
        for _key, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            print(f"{len(names):3d}  {results[names[0]][1][:200]}")
            print(f"     {', '.join(names)[:300]}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
