"""Real, legitimate model files made once per session: the scanner must pass all of them."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4))
    return x, (x[:, 0] + x[:, 1] > 0).astype(int)


@pytest.fixture(scope="session")
def legit_models(xy):  # type: ignore[no-untyped-def]
    import lightgbm
    import xgboost
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = xy
    return {
        "rf": RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0).fit(x, y),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
        "xgb": xgboost.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(x, y),
        "lgb": lightgbm.LGBMClassifier(n_estimators=3, verbose=-1, n_jobs=1).fit(x, y),
    }


@pytest.fixture(scope="session")
def legit_dir(tmp_path_factory: pytest.TempPathFactory, legit_models) -> Path:  # type: ignore[no-untyped-def]
    """One directory of real files: pickles, joblib (raw + every compressor), torch, numpy."""
    import joblib
    import torch

    d = tmp_path_factory.mktemp("legit")
    for name, model in legit_models.items():
        for proto in (2, 4, 5):
            (d / f"{name}_p{proto}.pkl").write_bytes(pickle.dumps(model, protocol=proto))
    for name in ("rf", "pipeline"):
        joblib.dump(legit_models[name], d / f"{name}.joblib")
        for comp in ("zlib", "gzip", "bz2", "xz", "lzma"):
            joblib.dump(legit_models[name], d / f"{name}_{comp}.joblib", compress=(comp, 3))
    joblib.dump({"arr": np.arange(1000.0), "obj": np.array([1, "a"], dtype=object)}, d / "arrays.joblib")

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    net.eval()
    torch.save(net.state_dict(), d / "state_dict.pt")
    torch.save(net.state_dict(), d / "state_dict_legacy.pt", _use_new_zipfile_serialization=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated, still saved by users
        qtensor = torch.quantize_per_tensor(torch.rand(4), 0.1, 0, torch.quint8)
    opt = torch.optim.Adam(net.parameters())
    net.train()
    net(torch.randn(4, 4)).sum().backward()
    opt.step()
    net.eval()
    torch.save(
        {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": 3,
            "lr": 0.1,
            "half": torch.zeros(3, dtype=torch.float16),
            "np": np.arange(3),
            "size": torch.Size([2, 3]),
            "device": torch.device("cpu"),
            "q": qtensor,
        },
        d / "checkpoint.pth",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(net).save(str(d / "scripted.pt"))
        torch.jit.trace(net, torch.zeros(2, 4)).save(str(d / "traced.pt"))

    np.save(d / "array.npy", np.arange(12.0).reshape(3, 4))
    np.save(d / "strings.npy", np.array(["a", "bc"]))
    np.savez(d / "arrays.npz", a=np.arange(3), b=np.ones((2, 2)))
    np.savez_compressed(d / "arrays_c.npz", a=np.arange(3))
    (d / "array_p5.pkl").write_bytes(pickle.dumps(np.arange(10.0), protocol=5))
    (d / "array_p2.pkl").write_bytes(pickle.dumps(np.arange(10.0), protocol=2))
    (d / "README.txt").write_text("not a pickle\n")
    return d
