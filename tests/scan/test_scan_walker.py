"""The opcode walker and the policy, unit by unit: what is recovered, where, how severe."""

from __future__ import annotations

import pickle

from scan_payloads import EVIL, GET, P2, P4, SG, STOP, SU, G, U, call

from packserve.scan import Severity, scan_bytes
from packserve.scan.pickle.opcodes import walk
from packserve.scan.policy import allowlist, is_allowed, judge, normalize
from packserve.scan.stream import bytes_reader


def globals_of(data: bytes) -> list[tuple[str, str]]:
    return [(g.module, g.name) for g in walk(bytes_reader(data)).globals]


def test_global_offsets_and_names() -> None:
    res = walk(bytes_reader(EVIL))
    assert res.ok and res.protocol == 2
    assert [(g.module, g.name, g.offset, g.opcode) for g in res.globals] == [("os", "system", 2, "GLOBAL")]
    report = scan_bytes(EVIL, "evil.pkl")
    (f,) = [f for f in report.findings if f.rule == "dangerous-global"]
    assert (f.file, f.member, f.offset, f.global_name) == ("evil.pkl", None, 2, "os.system")
    assert f.severity is Severity.CRITICAL
    assert report.exit_code == 1


def test_memo_fed_stack_global_is_recovered() -> None:
    data = P4 + SU("os") + b"\x94" + b"0" + SU("system") + b"\x94" + b"0" + GET(0) + GET(1) + b"\x93" + STOP
    assert globals_of(data) == [("os", "system")]


def test_every_protocol_recovers_the_reduce_target() -> None:
    class Evil:
        def __reduce__(self):  # noqa: ANN204
            import os

            return (os.system, ("true",))

    for proto in range(6):
        data = pickle.dumps(Evil(), protocol=proto)
        mods = {normalize(m, n) for m, n in globals_of(data)}
        assert ("os", "system") in mods, proto


def test_aliases_and_compat_names() -> None:
    assert normalize("__builtin__", "eval") == ("builtins", "eval")
    assert normalize("posix", "system") == ("os", "system")
    assert normalize("_operator", "attrgetter") == ("operator", "attrgetter")
    assert normalize("copy_reg", "_reconstructor") == ("copyreg", "_reconstructor")
    for mod, name in [
        ("nt", "system"),
        ("__builtin__", "getattr"),
        ("_pickle", "loads"),
        ("os.path", "join"),
        ("subprocess", "run"),
        ("urllib.request", "urlopen"),
    ]:
        v = judge(mod, name)
        assert v is not None and v.severity is Severity.CRITICAL, (mod, name)


def test_allowlist_is_exact_and_default_deny() -> None:
    assert is_allowed("collections", "OrderedDict")
    assert is_allowed("torch._utils", "_rebuild_tensor_v2")
    assert is_allowed("sklearn.ensemble._forest", "RandomForestClassifier")
    assert not is_allowed("collections", "OrderedDict.fromkeys")  # dotted
    assert not is_allowed("sklearn.ensemble", "NotAClass")
    assert not is_allowed("numpy", "load")
    assert not is_allowed("__torch__.foo", "Bar")  # TorchScript classes: only inside archives
    assert is_allowed("__torch__.foo", "Bar", torchscript=True)
    v = judge("mymodule", "Thing")
    assert v is not None and v.rule == "unknown-global" and v.severity is Severity.HIGH


def test_allowlist_has_no_dangerous_entries() -> None:
    from packserve.scan.policy import DANGEROUS_NAMES, dangerous_reason

    entries = allowlist()
    assert len(entries) > 500
    reviewed = {("joblib.numpy_pickle", "NumpyArrayWrapper")}
    for module, name in entries:
        assert normalize(module, name) not in DANGEROUS_NAMES
        if module.startswith("torch.jit._pickle") or (module, name) in reviewed:
            continue
        assert dangerous_reason(module, name) is None, (module, name)


def test_big_payloads_are_skipped_not_read() -> None:
    big = b"\x00" * (3 << 20)
    data = P4 + b"\x8e" + len(big).to_bytes(8, "little") + big + b"0" + G("os", "system") + STOP
    res = walk(bytes_reader(data))
    assert res.ok and [g.name for g in res.globals] == ["system"]


def test_not_a_pickle_is_data_not_a_finding() -> None:
    for text in (b"hello world\n", b"class Foo(Module):\n  pass\n", b'{"a": 1}', b"3\n"):
        report = scan_bytes(text, "t")
        assert report.clean, (text, report.to_dict())
        assert report.files["t"] == "not a pickle format" and report.not_pickle == ["t"]


def test_stack_global_from_allowed_strings_is_still_judged() -> None:
    data = P4 + call(SG("builtins", "set"), "ab") + STOP
    assert scan_bytes(data).clean
    data = P4 + call(SG("builtins", "getattr"), "ab") + STOP
    assert not scan_bytes(data).clean


def test_computed_call_is_flagged() -> None:
    # REDUCE on the result of another REDUCE (an allowed one): still a computed call.
    data = P2 + call(G("collections", "OrderedDict")) + U("x") + b"\x85" + b"R" + STOP
    rules = {f.rule for f in scan_bytes(data).findings}
    assert "computed-call" in rules


def test_import_scan_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, packserve.scan, packserve.scan.loader, packserve.scan.render\n"
        "heavy = ['torch', 'sklearn', 'joblib', 'pandas', 'xgboost', 'onnxruntime', 'rich.table']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_old_protocols_are_not_mistaken_for_compression() -> None:
    for proto in range(6):
        data = pickle.dumps([1, 2, {"a": (3,)}], protocol=proto)
        report = scan_bytes(data, "x")
        assert report.clean and report.files["x"] == "pickle", proto


def test_every_pickle_opcode_has_a_handler() -> None:
    import pickletools

    from packserve.scan.pickle.handlers.plain import DISPATCH
    from packserve.scan.pickle.opcodes import walk as _walk  # noqa: F401 - registers every handler

    assert set(DISPATCH) == {ord(o.code.encode("latin1")) for o in pickletools.opcodes}
