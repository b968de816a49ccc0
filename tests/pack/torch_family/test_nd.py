"""Torch tensor models (issue #16): the seven kinds packed in both formats, loaded in a fresh
process without their classes, compared with eager torch within the recorded tolerance.

The four heavier kinds (CNN, resnet18-shaped, GRU, TransformerEncoder) are ``slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import packserve  # noqa: E402
from packserve.errors import InputError, PackError, SampleError  # noqa: E402
from torch_family.nd_models import KINDS, VOCAB, TextClassifier, seeded  # noqa: E402

FAST = ("text", "two_inputs", "tuple")
HEAVY = ("cnn", "resnet", "gru", "transformer")
_PACKED: dict[tuple[str, str], Path] = {}


@pytest.fixture(scope="session")
def nd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("torch_nd")


def packed(kind: str, fmt: str, root: Path) -> Path:
    """Pack ``kind`` in ``fmt`` once per session."""
    key = (kind, fmt)
    if key not in _PACKED:
        cls, sample, opts = KINDS[kind]
        _PACKED[key] = packserve.pack(seeded(cls), root / f"{kind}_{fmt}", sample=sample(0),
                                      name=kind.replace("_", "-"), format=fmt, **opts).path
    return _PACKED[key]


def _eager(kind: str, x: Any) -> dict[str, np.ndarray]:
    model = seeded(KINDS[kind][0]).eval()
    with torch.no_grad():
        if isinstance(x, dict):
            out = model(**{k: torch.from_numpy(v) for k, v in x.items()})
        else:
            out = model(torch.from_numpy(x))
    if isinstance(out, torch.Tensor):
        return {"output": out.numpy()}
    return {f"output_{i}": t.numpy() for i, t in enumerate(out)}


_FRESH = textwrap.dedent("""
    import json, sys
    import numpy as np
    import packserve
    jobs = json.loads(sys.argv[1])
    for bundle, inputs, out in jobs:
        data = dict(np.load(inputs))
        p = packserve.load(bundle)
        x = data if len(data) > 1 else next(iter(data.values()))
        pred = p.predict(x)
        raw = p._run_raw(p.to_feeds(x))
        np.savez(out, **{f"raw_{k}": v for k, v in raw.items()})
    assert "torch_family.nd_models" not in sys.modules
    print("classes imported:", [m for m in sys.modules if "torch_family" in m])
""")


def _check_kinds(kinds: tuple[str, ...], root: Path, tmp_path: Path) -> None:
    jobs, expected = [], {}
    for kind in kinds:
        held_out = KINDS[kind][1](1)  # seed 1: not the pack sample
        if kind == "transformer":  # the variable axis at another length than packed with
            held_out = np.random.default_rng(5).normal(size=(3, 11, 16)).astype(np.float32)
        arrays = held_out if isinstance(held_out, dict) else {"x": held_out}
        np.savez(tmp_path / f"{kind}_in.npz", **arrays)
        ref = _eager(kind, held_out)
        for fmt in ("onnx", "torchscript"):
            bundle = packed(kind, fmt, root)
            out = tmp_path / f"{kind}_{fmt}_out.npz"
            jobs.append([str(bundle), str(tmp_path / f"{kind}_in.npz"), str(out)])
            expected[(kind, fmt)] = (bundle, ref, out)
    env_path = str(Path(packserve.__file__).parents[1])
    res = subprocess.run([sys.executable, "-c", _FRESH, json.dumps(jobs)], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path, env={"PYTHONPATH": env_path,
                                                                    "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    for (kind, fmt), (bundle, ref, out) in expected.items():
        m = packserve.load(bundle).manifest
        tol = m.export["fidelity_tolerance"]
        assert tol["atol"] == 1e-4 and tol["rtol"] == 1e-4 and "different order" in tol["basis"]
        got = dict(np.load(out))
        for name, r in ref.items():
            bound = tol["atol"] + tol["rtol"] * float(np.abs(r).max())
            diff = float(np.abs(got[f"raw_{name}"] - r).max())
            assert diff <= bound, (kind, fmt, name, diff, bound)
        assert m.parity.passed and m.export["fidelity"]["passed"], (kind, fmt)
        assert m.is_tensor and m.schema_version == 2


def test_fast_kinds_pack_in_both_formats_and_load_without_their_classes(
    nd_dir: Path, tmp_path: Path
) -> None:
    _check_kinds(FAST, nd_dir, tmp_path)
    text = packserve.load(packed("text", "onnx", nd_dir)).manifest
    assert text.inputs[0].name == "tokens" and text.inputs[0].dtype == "int64"
    assert text.inputs[0].value_range == (0, VOCAB - 1)  # from the nn.Embedding, not the sample
    assert text.outputs.classes == ["neg", "neu", "pos"]
    two = packserve.load(packed("two_inputs", "torchscript", nd_dir)).manifest
    assert [i.name for i in two.inputs] == ["x_num", "x_cat"] and two.task == "regression"
    tup = packserve.load(packed("tuple", "onnx", nd_dir)).manifest
    assert tup.task == "tensor" and [t.name for t in tup.outputs.tensors] == ["output_0", "output_1"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", HEAVY)
def test_heavy_kind_packs_in_both_formats_and_loads_without_its_class(
    kind: str, nd_dir: Path, tmp_path: Path
) -> None:
    _check_kinds((kind,), nd_dir, tmp_path)
    if kind == "transformer":
        enc = packserve.load(packed("transformer", "onnx", nd_dir)).manifest
        assert enc.inputs[0].shape == [None, None, 16] and enc.inputs[0].axes == {0: "batch", 1: "seq"}
        assert enc.outputs.tensors[0].shape == [None, None, 16]
        assert any("training mode" in n for n in enc.notes)  # dropout=0.1, packed from train mode
        assert any(c.get("probe", "").startswith("x_axis1_len") for c in enc.parity.checks)


def test_wrong_shapes_dtypes_and_ranges_are_refused(nd_dir: Path) -> None:
    p = packserve.load(packed("text", "onnx", nd_dir))
    ok = np.zeros((5, 16), dtype=np.int64)
    assert len(p.predict(ok)) == 5
    bad = [dict(tokens=list(range(16))) for _ in range(5)]
    bad[3]["tokens"] = list(range(17))
    with pytest.raises(InputError, match="input 'tokens', instance 3: axis 1 has 17 values, expected 16"):
        p.predict(bad)
    too_big = ok.copy()
    too_big[2, 4] = VOCAB
    with pytest.raises(InputError, match=r"instance 2: must be within \[0, 99\]"):
        p.predict(too_big)
    with pytest.raises(InputError, match="whole number"):
        p.predict(ok + 0.5)
    with pytest.raises(InputError, match="expected a 2-D array"):
        p.predict(np.zeros(16, dtype=np.int64))


def test_exported_program_and_its_module_pack(nd_dir: Path, tmp_path: Path) -> None:
    model = seeded(TextClassifier).eval()
    x = torch.from_numpy(KINDS["text"][1](0))
    batch = torch.export.Dim("batch")
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    res = packserve.pack(ep, tmp_path / "ep", sample=x, name="ep", task="multiclass", output="logits")
    assert any("ExportedProgram" in n for n in res.manifest.notes)
    held = KINDS["text"][1](3)
    ref = model(torch.from_numpy(held)).detach().numpy()
    got = packserve.load(res.path)._run_raw({"tokens": held})["output"]
    assert np.abs(got - ref).max() <= 1e-4
    # ep.module() (whose eval() raises NotImplementedError) packs as a module, TorchScript too
    ts = packserve.pack(ep.module(), tmp_path / "ep_mod", sample=x, name="epm", format="torchscript",
                        task="multiclass", output="logits")
    assert ts.manifest.parity.passed
    static = torch.export.export(model, (x,))  # batch axis specialised to 16
    with pytest.raises(PackError, match="fixed batch axis .16.*dynamic_shapes"):
        packserve.pack(static, tmp_path / "static", sample=x, name="s", task="multiclass",
                       output="logits")


def test_user_model_exceptions_become_pack_errors(tmp_path: Path) -> None:
    class Picky(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] != 5:
                raise ValueError("needs five columns")
            return x * 2

    with pytest.raises(SampleError, match="Picky raised ValueError on the fidelity probe 'sample'"):
        packserve.pack(Picky(), tmp_path / "p", sample=np.zeros((3, 4, 2), dtype=np.float32),
                       name="p", task="tensor")

    class OnlyPositive(torch.nn.Module):  # fails on the negated probe only: skipped, and noted
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch._assert(bool((x >= 0).all()), "negative input")
            return x.sum(dim=(1, 2)).unsqueeze(1)

    res = packserve.pack(OnlyPositive(), tmp_path / "q", sample=np.ones((3, 4, 2), dtype=np.float32),
                         name="q", task="tensor", format="torchscript", method="script")
    assert any("skipped" in n and "negated" in n for n in res.manifest.notes)


def test_table_torch_models_keep_the_table_signature(nd_dir: Path, tmp_path: Path) -> None:
    from torch_family.models import FraudDetector

    res = packserve.pack(seeded(FraudDetector), tmp_path / "fraud", sample=np.zeros((4, 15)),
                         name="fraud", format="torchscript")
    assert res.manifest.signature == "table" and res.manifest.schema_version == 1


def test_pt2_archives_are_refused_with_the_reason(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from packserve.cli import app
    from packserve.errors import UnsupportedModelError
    from packserve.pack.files import load_model_file

    ep = torch.export.export(torch.nn.Linear(3, 2), (torch.randn(2, 3),))
    torch.export.save(ep, tmp_path / "m.pt2")
    (tmp_path / "renamed.bin").write_bytes((tmp_path / "m.pt2").read_bytes())
    for name in ("m.pt2", "renamed.bin"):  # detected by content, not only by name
        with pytest.raises(UnsupportedModelError, match="full unpickling.*AOTInductor"):
            load_model_file(tmp_path / name)
    np.savetxt(tmp_path / "s.csv", np.zeros((2, 3)), delimiter=",")
    res = CliRunner().invoke(app, ["pack", str(tmp_path / "m.pt2"), str(tmp_path / "out"),
                                   "--sample", str(tmp_path / "s.csv")])
    assert res.exit_code != 0 and "unpickling" in res.output and not (tmp_path / "out").exists()


def test_served_torch_bundles_answer_like_the_python_api(nd_dir: Path, tmp_path: Path) -> None:
    """/predict, /predict/batch and V2 (tritonclient, binary) equal packserve.load().predict."""
    import shutil

    import httpx
    import tritonclient.http as httpclient

    from helpers.server import running_server

    repo = tmp_path / "repo"
    for kind, fmt in (("text", "onnx"), ("two_inputs", "torchscript"), ("tuple", "onnx")):
        shutil.copytree(packed(kind, fmt, nd_dir), repo / kind.replace("_", "-") / "1")
    with running_server(repo) as srv:
        c = httpclient.InferenceServerClient(srv.url.removeprefix("http://"))
        for kind in ("text", "two_inputs", "tuple"):
            name = kind.replace("_", "-")
            local = packserve.load(repo / name / "1")
            x = KINDS[kind][1](2)
            named = x if isinstance(x, dict) else {local.manifest.inputs[0].name: x}
            ref = local.predict(named)
            insts = [{"inputs": {k: v[i].tolist() for k, v in named.items()}} for i in range(4)]
            r = httpx.post(f"{srv.url}/models/{name}/predict/batch", json={"instances": insts})
            assert r.status_code == 200, r.text
            preds = r.json()["predictions"]
            one = httpx.post(f"{srv.url}/models/{name}/predict", json=insts[0]).json()
            assert one.keys() == {*preds[0], "model_version"}  # batch size 1 vs 4: same to 1e-6
            assert json.dumps(one.get("prediction")) == json.dumps(preds[0].get("prediction")) or \
                np.allclose(one["prediction"], preds[0]["prediction"], atol=1e-6)
            if ref.outputs is not None:
                for k, v in ref.outputs.items():
                    assert np.allclose([p["outputs"][k] for p in preds], v[:4], atol=1e-6)
            elif ref.labels is not None:
                assert [p["prediction"] for p in preds] == ref.labels[:4].tolist()
            else:
                assert np.allclose([p["prediction"] for p in preds], ref.values[:4].reshape(4, -1)[:, 0])
            meta = {i["name"]: i["datatype"] for i in c.get_model_metadata(name)["inputs"]}
            inputs = []
            for k, v in named.items():
                t = httpclient.InferInput(k, list(v.shape), meta[k])
                t.set_data_from_numpy(v, binary_data=True)
                inputs.append(t)
            res = c.infer(name, inputs)
            if ref.outputs is not None:
                for k, v in ref.outputs.items():
                    assert np.array_equal(res.as_numpy(k), v)
            elif ref.probabilities is not None:
                assert np.array_equal(res.as_numpy("probabilities"), ref.probabilities)
            else:
                assert np.allclose(res.as_numpy("value").reshape(-1), ref.values.reshape(-1))
        c.close()
