"""`trapcls export tensorrt`: an FP16 engine built on the target GPU from the bundle's ONNX, checked and recorded.

FP16 is done the way the installed TensorRT wants it (`fp16_mode`):
- TensorRT 10.0-10.11 (JetPack 6.1 and 6.2 ship 10.3): the FP32 ONNX, weakly typed, with BuilderFlag.FP16
  letting the builder pick FP16 kernels;
- TensorRT 10.12+ and 11.x: weak typing is deprecated (and BuilderFlag.FP16 is gone in 11), so the
  network is created STRONGLY_TYPED from an FP16 ONNX whose inputs and outputs stay FP32 and
  whose numerically sensitive ops stay FP32 (trapcls.export.fp16). The FP16 flag is never set
  on a strongly typed network: there the tensors' types decide precision, and NVIDIA's 10.x-to-11
  migration guide replaces the flag with exactly this (an FP16 model, strongly typed).
  (Weak typing deprecated: TensorRT 10.12 release notes; flag removed: the 10.x-to-11.x migration
  guide, https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html.)
  (Builder docs: https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html,
  NetworkDefinitionCreationFlag.STRONGLY_TYPED; "Strong Typing vs Weak Typing" in the TensorRT
  developer guide, https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/advanced.html.)
The builder runs with ProfilingVerbosity.DETAILED so the engine inspector can report each
layer's data types; an engine whose compute layers are not mostly FP16 is refused rather than
labelled "fp16". The engine is then run against ONNX Runtime on real frames and kept only
within the FP16 tolerances. Until all of that passes, nothing in the bundle changes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from trapcls import __version__
from trapcls.core.model.bundle import Bundle, load_bundle
from trapcls.core.model.engines import ENGINE_DIR, TIMING_CACHE, EngineMeta, engine_name, record_engine, write_metadata
from trapcls.core.model.probs import probabilities
from trapcls.core.model.profile import Profile
from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import ExportError, MissingDependencyError
from trapcls.core.system.fsutil import atomic_write_bytes, sha256_file
from trapcls.core.system.hardware import gpu_info
from trapcls.export.fp16 import convert_to_fp16
from trapcls.export.parity import (
    FP16_MEAN_ABS_TOL,
    FP16_MIN_TOP1,
    NEAR_TIE,
    fp16_agreement,
    refuse_past_fp16_tolerance,
    sample_images,
    verification_batch,
)
from trapcls.predict.backends import OnnxRuntimeBackend
from trapcls.predict.tensorrt import TensorRTRunner

log = logging.getLogger(__name__)

BUILDER_FLAG, STRONGLY_TYPED = "builder-flag", "strongly-typed"
# Layers that do the arithmetic; reformatting and shuffles carry whatever precision their neighbours use.
_COMPUTE_LAYER = re.compile(r"conv|gemm|matrixmultiply|fullyconnected|pointwise|pool|reduce|elementwise|activation"
                            r"|scale|softmax|kgen|myelin", re.IGNORECASE)
FP16_LAYER_SHARE = 0.5  # at least this share of compute layers must output FP16 for an "fp16" engine


@dataclass(frozen=True)
class TensorRTExport:
    """Where the engine went and how it checked out."""

    engine: Path
    meta: EngineMeta

    def lines(self) -> list[str]:
        """The engine and the check it passed, with its tolerances."""
        meta, check = self.meta, self.meta.verification
        return [f"engine: {self.engine} ({meta.engine_bytes / 2**20:.1f} MiB, {meta.precision} via {meta.fp16_mode}, "
                f"TensorRT {meta.tensorrt_version}, {meta.gpu_name})",
                f"verified on {check['images']} images against ONNX Runtime: top-1 agreement "
                f"{check['top1_agreement']:.1%} (needs {FP16_MIN_TOP1:.0%}), mean abs probability difference "
                f"{check['mean_abs_diff']:.2e} (tolerance {FP16_MEAN_ABS_TOL:.0e}), max {check['max_abs_diff']:.2e}"]


def fp16_mode(tensorrt_version: str) -> str:
    """How to get FP16 from this TensorRT: BUILDER_FLAG before 10.12, STRONGLY_TYPED from 10.12 on."""
    match = re.match(r"(\d+)\.(\d+)", tensorrt_version)
    if not match:
        raise ExportError(f"Cannot read the TensorRT version {tensorrt_version!r}.")
    major, minor = int(match[1]), int(match[2])
    if major < 10:
        raise ExportError(f"TensorRT {tensorrt_version} is too old: trapcls needs TensorRT 10 or newer (JetPack 6.1 "
                          "or later on a Jetson) for the named-tensor API.")
    return BUILDER_FLAG if (major, minor) < (10, 12) else STRONGLY_TYPED


def tensor_precision(description: str) -> str:
    """'fp16', 'fp32', 'int8' or 'unknown' from an inspector 'Format/Datatype' string
    ("Row major linear FP16 format", "Half", "Float", "Channel major FP32 format ...")."""
    text = description.lower()
    if "fp16" in text or "half" in text or "float16" in text:
        return "fp16"
    if "int8" in text:
        return "int8"
    if "fp32" in text or "float" in text:
        return "fp32"
    return "unknown"


def precision_evidence(engine_information: str | None, *, engine_bytes: int, fp32_weight_bytes: int) -> dict:
    """Decide from the engine itself whether it is FP16.

    Primary evidence: the inspector's JSON (DETAILED verbosity, shapes set on a context) — the
    output data type of every compute layer. Without layer detail, the fallback is size: FP16
    weights take half the bytes, so an engine smaller than 0.75x the FP32 weights is FP16.
    """
    counts = {"fp16": 0, "fp32": 0, "int8": 0, "unknown": 0}
    if engine_information:
        try:
            layers = json.loads(engine_information).get("Layers", [])
        except (json.JSONDecodeError, AttributeError):
            layers = []
        for layer in layers:
            if not isinstance(layer, dict) or not _COMPUTE_LAYER.search(str(layer.get("LayerType", ""))):
                continue
            outputs = layer.get("Outputs") or []
            kinds = {tensor_precision(str(t.get("Format/Datatype", ""))) for t in outputs if isinstance(t, dict)}
            kind = "fp16" if "fp16" in kinds else next(iter(kinds - {"unknown"}), "unknown")
            counts[kind] += 1
    known = counts["fp16"] + counts["fp32"] + counts["int8"]
    evidence = {"compute_layers": counts, "engine_bytes": engine_bytes, "fp32_weight_bytes": fp32_weight_bytes}
    if known:
        share = counts["fp16"] / known
        evidence.update(method="layer data types", fp16_share=round(share, 4), fp16_confirmed=share >= FP16_LAYER_SHARE)
    else:
        ratio = engine_bytes / fp32_weight_bytes if fp32_weight_bytes else float("inf")
        evidence.update(method="engine size", size_ratio=round(ratio, 4), fp16_confirmed=ratio < 0.75)
    return evidence


def export_tensorrt(bundle_dir: Path, profile: Profile | None = None, *,
                    verify_images: list[Path] | None = None) -> TensorRTExport:
    """Build, check and record an FP16 engine for this machine's GPU in the bundle at `bundle_dir`."""
    profile = profile or Profile()
    bundle = load_bundle(bundle_dir)
    if bundle.onnx_precision == "int8":
        raise ExportError(f"{bundle.onnx_path} is the INT8 model `export onnx --int8` made for the CPU; TensorRT "
                          "builds its FP16 engine from an FP32 or FP16 bundle. Export one without --int8 and build "
                          "from that.")
    trt = require("tensorrt")
    gpu = gpu_info()
    if gpu is None:
        raise MissingDependencyError("No CUDA GPU is visible (checked cuda-python, torch and nvidia-smi); a "
                                     "TensorRT engine must be built on the GPU that will run it.")
    mode = fp16_mode(trt.__version__)
    engines = bundle.root / ENGINE_DIR
    engines.mkdir(exist_ok=True)
    name = engine_name(gpu, trt.__version__)
    staging = engines / f".{name}.partial-{os.getpid()}"
    try:
        started = time.perf_counter()
        plan, io_names, info = _build(trt, bundle, profile, mode, engines / TIMING_CACHE)
        build_seconds = time.perf_counter() - started
        atomic_write_bytes(staging, plan)
        evidence = precision_evidence(info, engine_bytes=len(plan), fp32_weight_bytes=_fp32_weight_bytes(bundle))
        if not evidence["fp16_confirmed"]:
            raise ExportError(f"TensorRT built an engine that is not FP16 ({evidence}); it was not kept. "
                              "This GPU may lack fast FP16 (builder.platform_has_fast_fp16).")
        verification = verify_engine(staging, bundle, verify_images)
        (engines / name).unlink(missing_ok=True)
        os.replace(staging, engines / name)
        meta = EngineMeta(
            engine_file=f"{ENGINE_DIR}/{name}", engine_sha256=sha256_file(engines / name), engine_bytes=len(plan),
            tensorrt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
            sm_count=gpu.sm_count, onnx_sha256=bundle.onnx_sha256, precision="fp16",
            fp16_mode=mode, profile=asdict(profile), input_name=io_names[0], output_name=io_names[1],
            built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), build_seconds=round(build_seconds, 1),
            trapcls_version=__version__, precision_evidence=evidence, verification=verification)
        write_metadata(meta, bundle.root)
        record_engine(bundle, meta)
    finally:
        staging.unlink(missing_ok=True)
    log.info("engine %s: %s, %.0f s to build, verified on %d images", meta.engine_file, mode, build_seconds,
             verification["images"])
    return TensorRTExport(engine=bundle.root / meta.engine_file, meta=meta)


def _build(trt, bundle: Bundle, profile: Profile, mode: str, cache_path: Path) -> tuple[bytes, tuple[str, str], str]:
    """Parse the ONNX, build a serialized engine with one dynamic-batch profile; keep the timing cache."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if mode == STRONGLY_TYPED else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    onnx_path = _onnx_for(bundle, mode)
    try:
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    finally:
        if onnx_path != bundle.onnx_path:
            onnx_path.unlink(missing_ok=True)  # the FP16 copy was only needed for parsing
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mib << 20)
    if mode == BUILDER_FLAG:
        config.set_flag(trt.BuilderFlag.FP16)  # weak typing: FP16 kernels allowed, TensorRT picks per layer
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer data types for precision_evidence
    image = network.get_input(0)
    _, channels, height, width = image.shape
    shape = (int(channels), bundle.preprocess.height, bundle.preprocess.width)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(image.name, (profile.min_batch, *shape), (profile.opt_batch, *shape),
                          (profile.max_batch, *shape))
    config.add_optimization_profile(opt_profile)
    # The timing cache makes rebuilds (a new profile, a retrained model) take seconds instead of minutes.
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine; see its log above (often: --workspace too small "
                          "or --max-batch too large for this GPU's memory).")
    atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    plan = bytes(memoryview(serialized))
    return plan, (image.name, network.get_output(0).name), _inspect(trt, logger, plan, image.name,
                                                                   (profile.opt_batch, *shape))


def _onnx_for(bundle: Bundle, mode: str) -> Path:
    """The ONNX to parse: the bundle's own, or for strong typing an FP16 version of it made next to the engines."""
    precision = bundle.onnx_precision
    if mode == BUILDER_FLAG or precision == "fp16":
        return bundle.onnx_path
    import onnx

    converted = bundle.root / ENGINE_DIR / "model.fp16.onnx"
    onnx.save(convert_to_fp16(onnx.load(str(bundle.onnx_path))), str(converted))
    return converted


def _inspect(trt, logger, plan: bytes, input_name: str, shape: tuple[int, ...]) -> str | None:
    """The engine inspector's JSON with concrete shapes (with dynamic shapes unset it reports 'N/A')."""
    try:
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        context = engine.create_execution_context()
        context.set_input_shape(input_name, shape)
        inspector = engine.create_engine_inspector()
        inspector.execution_context = context
        return inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    except Exception as exc:  # inspection is evidence, not a requirement: fall back to the size check
        log.warning("engine inspector unavailable (%s); judging precision by engine size", exc)
        return None


def _fp32_weight_bytes(bundle: Bundle) -> int:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle.onnx_path))
    return sum(numpy_helper.to_array(t).size * 4 for t in model.graph.initializer
               if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))


def verify_engine(engine: Path, bundle: Bundle, images: list[Path] | None) -> dict:
    """Run the engine and ONNX Runtime (CPU, FP32) on real frames; raise ExportError past the FP16 tolerances."""
    batch, names = verification_batch(images or sample_images(), bundle.preprocess)
    reference = probabilities(OnnxRuntimeBackend(bundle, threads=1).logits(batch), 1.0)
    runner = TensorRTRunner(engine)
    try:
        candidate = probabilities(runner.logits(batch), 1.0)
    finally:
        runner.close()
    report = fp16_agreement(reference, candidate, names)
    refuse_past_fp16_tolerance(report, "The TensorRT engine does not match ONNX Runtime", "It was not kept.")
    return {**asdict(report), "tolerances": {"mean_abs_diff": FP16_MEAN_ABS_TOL, "top1_agreement": FP16_MIN_TOP1,
                                             "near_tie": NEAR_TIE}}
