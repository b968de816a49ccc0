"""``packserve pack`` and ``packserve inspect``: native model file -> bundle, bundle summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from packserve.cli.console import err, out
from packserve.errors import ConfigError


def pack_cmd(
    src: Path = typer.Argument(..., metavar="SRC", help="Model file: XGBoost .json/.ubj, "
                               "LightGBM .txt, CatBoost .cbm, Keras .keras/.h5 (scanned, then "
                               "loaded with safe_mode), a TensorFlow SavedModel directory, an "
                               "ONNX .onnx file (sample: .npz keyed by input name); "
                               "pickle/joblib only via the scanner's safe migration."),
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Bundle directory to create."),
    sample: Path | None = typer.Option(
        None, "--sample", "-s", help="Sample rows (.csv with optional header — empty cells / NA "
        "are missing values —, .parquet or .npy; an N-D .npy or a .npz of named inputs for "
        "tensor models): signature inference + parity check. Image models packed with "
        "--preprocess may leave it out: generated images, preprocessed, are the sample."),
    name: str | None = typer.Option(None, "--name", help="Model name (default: file stem)."),
    version: str = typer.Option("1.0.0", "--version", help="Model version."),
    feature_names: str | None = typer.Option(
        None, "--feature-names", help="Comma-separated feature names (default: CSV header, "
        "else the model's own, else f0..fN)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    allow_parity_failure: bool = typer.Option(
        False, "--allow-parity-failure", help="Write the bundle even if parity fails "
        "(the failure is recorded in its manifest)."),
    example_rows: bool = typer.Option(
        True, "--example-rows/--no-example-rows", help="Store a few sample rows in the manifest "
        "(the served OpenAPI example, bench inputs). --no-example-rows keeps real data out of "
        "the bundle; placeholders are used instead."),
    sign_key: Path | None = typer.Option(
        None, "--sign-key", help="Sign the finished bundle with this EC private key (PEM): "
        "model.sig, as `packserve sign` writes it."),
    expected: Path | None = typer.Option(
        None, "--expected", help="ONNX files: the outputs the source framework computed on "
        "the sample (.npz keyed by output name); the bundle must match them."),
    out_task: str | None = typer.Option(
        None, "--task", help="ONNX files, Keras/TensorFlow: binary | multiclass | regression | "
        "tensor (ONNX default: tensor, every output served by name; Keras: what the final "
        "layer / compiled loss says)."),
    classes: str | None = typer.Option(
        None, "--classes", help="Class labels in output column order: comma-separated, or a "
        "file (one label per line, or a JSON list)."),
    output: str | None = typer.Option(
        None, "--output", help="ONNX files, Keras/TensorFlow classifiers: what the output holds, "
        "probability (default) or logits (softmax / sigmoid applied when serving)."),
    preprocess: str | None = typer.Option(
        None, "--preprocess", help="Image models: the preprocessing spec as JSON or a .json file "
        '(e.g. \'{"resize": 256, "crop": [224, 224], "mean": [0.485, 0.456, 0.406], "std": '
        '[0.229, 0.224, 0.225]}\'); the server then takes encoded images, and the whole image '
        "path is checked against the model at pack time."),
) -> None:
    """Pack a native model file into a verified bundle (ONNX + manifest with parity)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from packserve.errors import OutputExistsError
    from packserve.pack import pack
    from packserve.pack.files import align_sample, load_model_file, load_sample_file
    from packserve.pack.images import image_sample
    from packserve.pack.progress import reporting
    from packserve.pack.report import print_summary
    from packserve.pack.samples import load_tensor_sample

    if out_dir.exists() and not force:  # refuse before any slow work
        raise OutputExistsError(f"output directory '{out_dir}' already exists (use --force)")
    names = [n.strip() for n in feature_names.split(",")] if feature_names else None
    common: dict[str, Any] = {k: v for k, v in (
        ("classes", read_classes(classes) if classes else None), ("output", output),
        ("preprocess", read_preprocess(preprocess) if preprocess else None)) if v is not None}
    images: dict[str, Any] = common.get("preprocess") or {}
    if sample is None and not images:
        raise ConfigError("--sample is required (only an image model packed with --preprocess "
                          "can do without: generated images are its sample)")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err(), transient=True) as bar:
        task = bar.add_task(f"loading {src}", total=None)

        def show(message: str) -> None:
            bar.update(task, description=message)

        if src.suffix.lower() == ".onnx":
            onnx_opts: dict[str, Any] = {"expected": expected, "task": out_task, **common}
            with reporting(show):
                result = pack(src, out_dir, sample=sample if sample is not None else
                              image_sample(images), name=name or src.stem,
                              version=version, force=force,
                              allow_parity_failure=allow_parity_failure,
                              example_rows=example_rows, sign_key=sign_key, **onnx_opts)
        else:
            model = load_model_file(src)
            table: Any
            model_names: list[str] | None = None
            if sample is None:
                table = image_sample(images)
            else:
                show(f"reading sample {sample}")
                table = load_tensor_sample(sample)
                if table is None:
                    table, model_names = align_sample(load_sample_file(sample), model)
            options: dict[str, Any] = {"task": out_task} if out_task is not None else {}
            options.update(common)
            with reporting(show):
                result = pack(model, out_dir, sample=table, name=name or src.stem,
                              version=version, feature_names=names or model_names, force=force,
                              allow_parity_failure=allow_parity_failure,
                              example_rows=example_rows, sign_key=sign_key, **options)
    print_summary(out(), result.manifest)
    out().print(f"[bold]bundle written:[/] {result.path}", highlight=False, soft_wrap=True)
    if result.signature is not None:
        out().print(f"[bold]signed:[/] key {result.signature.key_fingerprint}", highlight=False)


def read_classes(value: str) -> list[str]:
    """``--classes``: a file (one label per line, or a JSON list) or a comma-separated list."""
    import json

    path = Path(value)
    if not path.is_file():
        return [c.strip() for c in value.split(",") if c.strip()]
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            labels = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--classes {value}: not a JSON list ({exc})") from None
        if not isinstance(labels, list):
            raise ConfigError(f"--classes {value}: not a JSON list")
        return [str(c) for c in labels]
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_preprocess(value: str) -> dict[str, Any]:
    """``--preprocess``: inline JSON (starts with ``{``) or a path to a JSON file."""
    import json

    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"--preprocess {value}: neither a JSON object nor a file")
        text = path.read_text(encoding="utf-8")
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--preprocess: invalid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ConfigError("--preprocess: the spec is a JSON object of fields")
    return spec


def inspect_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    key: list[Path] = typer.Option([], "--key", "-k", help="Also verify the signature with this "
                                   "trusted public key / CA certificate (PEM); repeatable."),
) -> None:
    """Summarise a bundle, verify its files' sha256 (exit 5) and show its signature status."""
    from packserve.bundle import read_manifest, verify_bundle
    from packserve.cli.signing import signature_line
    from packserve.errors import IntegrityError
    from packserve.pack.report import print_summary

    manifest = read_manifest(bundle)
    problem: IntegrityError | None = None
    try:
        verify_bundle(bundle, manifest)
    except IntegrityError as exc:
        problem = exc
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
    else:
        print_summary(out(), manifest, integrity=problem.message if problem else None)
    status, refused = signature_line(bundle, key)
    if not as_json:
        out().print(f"[bold]signature[/]  {status}", highlight=False, soft_wrap=True)
    if refused is not None:
        raise refused
    if problem is not None:
        raise problem


__all__ = ["inspect_cmd", "pack_cmd", "read_classes", "read_preprocess"]
