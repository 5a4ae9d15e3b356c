"""Running a TensorRT engine: the named-tensor API on one CUDA stream with pinned host buffers.

Written to TensorRT 10's documented Python API (the engine's I/O is addressed by tensor name;
`execute_async_v3` replaced the binding-index calls removed in 10.0):
- https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/ExecutionContext.html
  (`set_input_shape`, `set_tensor_address`, `execute_async_v3(stream_handle)`);
- https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Engine.html
  (`num_io_tensors`, `get_tensor_name`, `get_tensor_mode`, `get_tensor_dtype`, `get_tensor_profile_shape`);
- NVIDIA's sample helper samples/python/common_runtime.py (pinned host memory via cudaMallocHost,
  cudaMemcpyAsync on the execution stream, then cudaStreamSynchronize).
Device memory, pinned host memory and the stream come from cuda-python when it is installed,
else from torch; `TensorRTRunner.memory` says which. Importing this module loads neither TensorRT
nor CUDA: that happens when a runner opens an engine.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from pathlib import Path

import numpy as np

from trapcls.core.system.deps import require
from trapcls.core.system.exceptions import BundleError, MissingDependencyError, TrapclsError

log = logging.getLogger(__name__)

GPU_ADVICE = ("Check the GPU with `nvidia-smi` (memory held by other processes?) and `trapcls doctor`, or classify "
              "with --backend onnxruntime meanwhile.")


def cuda_failure(what: str, detail: object) -> TrapclsError:
    """The one-line error for a CUDA call that failed while running an engine: what failed, and what to do."""
    return TrapclsError(f"The GPU failed while {what} ({detail}). {GPU_ADVICE}")


class _CudaPythonMemory:
    """cudaMalloc / cudaMallocHost / cudaMemcpyAsync from cuda-python, as NVIDIA's samples use them."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self._rt = cudart
        self.stream = self._call(cudart.cudaStreamCreate(), "creating a CUDA stream")
        self._device, self._host = [], []

    def _call(self, result, what: str = "running the TensorRT engine"):
        err, *rest = result
        if int(err) != 0:
            raise cuda_failure(what, f"CUDA error {getattr(err, 'name', err)}")
        return rest[0] if len(rest) == 1 else rest

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def device(self, nbytes: int) -> int:
        ptr = self._call(self._rt.cudaMalloc(nbytes), f"allocating {nbytes / 2**20:.0f} MiB of GPU memory")
        self._device.append(ptr)
        return int(ptr)

    def host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self._call(self._rt.cudaMallocHost(nbytes), f"allocating {nbytes / 2**20:.0f} MiB of pinned memory")
        self._host.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def to_device(self, dst: int, src: np.ndarray) -> None:
        self._call(self._rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                            self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def to_host(self, dst: np.ndarray, src: int) -> None:
        self._call(self._rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                            self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def synchronize(self) -> None:
        self._call(self._rt.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        for ptr in self._device:
            self._rt.cudaFree(ptr)
        for ptr in self._host:
            self._rt.cudaFreeHost(ptr)
        self._rt.cudaStreamDestroy(self.stream)
        self._device, self._host = [], []


class _TorchMemory:
    """The same operations with torch tensors: device buffers, pinned host tensors, a torch CUDA stream."""

    name = "torch"

    def __init__(self) -> None:
        self._torch = require("torch")
        if not self._torch.cuda.is_available():
            raise MissingDependencyError("torch cannot see a CUDA GPU, so it cannot hold TensorRT's buffers.")
        self.stream = self._torch.cuda.Stream()
        self._device: dict[int, object] = {}
        self._host: list[object] = []

    @property
    def stream_handle(self) -> int:
        return self.stream.cuda_stream

    def device(self, nbytes: int) -> int:
        buffer = self._torch.empty(nbytes, dtype=self._torch.uint8, device="cuda")
        self._device[buffer.data_ptr()] = buffer
        return buffer.data_ptr()

    def host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        pinned = self._torch.empty(int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=self._torch.uint8,
                                   pin_memory=True)
        self._host.append(pinned)
        return pinned.numpy().view(dtype).reshape(shape)

    def _bytes(self, array: np.ndarray):
        return self._torch.from_numpy(array.reshape(-1).view(np.uint8))  # shares the pinned memory

    def to_device(self, dst: int, src: np.ndarray) -> None:
        with self._torch.cuda.stream(self.stream):
            self._device[dst][: src.nbytes].copy_(self._bytes(src), non_blocking=True)

    def to_host(self, dst: np.ndarray, src: int) -> None:
        with self._torch.cuda.stream(self.stream):
            self._bytes(dst).copy_(self._device[src][: dst.nbytes], non_blocking=True)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self._device, self._host = {}, []


def cuda_memory():
    """Buffers and a stream from cuda-python when installed, else from torch."""
    if importlib.util.find_spec("cuda") is not None:
        try:
            return _CudaPythonMemory()
        except ImportError:
            pass
    if importlib.util.find_spec("torch") is not None:
        return _TorchMemory()
    raise MissingDependencyError("The tensorrt backend needs cuda-python or torch for GPU buffers: "
                                 "pip install cuda-python (or pip install 'trapcls[train]').")


class TensorRTRunner:
    """A deserialised engine, one execution context, and buffers sized for the profile's largest batch."""

    def __init__(self, engine_path: Path) -> None:
        trt = require("tensorrt")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BundleError(f"TensorRT could not deserialise {engine_path}; rebuild it on this machine.")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(f"{engine_path}: expected one input and one output tensor, got {inputs} and {outputs}.")
        self.input_name, self.output_name = inputs[0], outputs[0]
        low, _, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.image_shape = tuple(int(d) for d in high[1:])
        self.engine_path = Path(engine_path)
        self.context = self.engine.create_execution_context()
        if self.context is None:  # TensorRT returns None rather than raising, mostly for lack of GPU memory
            raise cuda_failure(f"preparing {self.engine_path.name}", "no execution context: out of GPU memory?")
        # Inputs and outputs stay FP32 in both FP16 modes; the dtype is read from the engine, not assumed.
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.context.set_input_shape(self.input_name, (self.max_batch, *self.image_shape))
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))
        try:
            self.memory = cuda_memory()
            self._host_in = self.memory.host((self.max_batch, *self.image_shape), self._in_dtype)
            self._host_out = self.memory.host(out_shape, self._out_dtype)
            self._dev_in = self.memory.device(self._host_in.nbytes)
            self._dev_out = self.memory.device(self._host_out.nbytes)
        except RuntimeError as exc:  # torch's CUDA errors (out of memory, a GPU in a bad state)
            raise cuda_failure(f"allocating the buffers of {self.engine_path.name}", exc) from exc
        self.context.set_tensor_address(self.input_name, self._dev_in)
        self.context.set_tensor_address(self.output_name, self._dev_out)
        log.info("tensorrt %s: %s, batch %d-%d, buffers from %s", trt.__version__, Path(engine_path).name,
                 self.min_batch, self.max_batch, self.memory.name)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits for any number of images: split into chunks within the profile, padded up to its minimum."""
        parts = [self._run(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        return np.concatenate(parts) if parts else np.zeros((0, self._host_out.shape[1]), np.float32)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        size = max(n, self.min_batch)
        self._host_in[:n] = chunk
        if size > n:
            self._host_in[n:size] = 0
        if not self.context.set_input_shape(self.input_name, (size, *self.image_shape)):
            raise BundleError(f"The engine refused batch shape {(size, *self.image_shape)}.")
        out = self._host_out[:size]
        try:
            self.memory.to_device(self._dev_in, self._host_in[:size])
            ran = self.context.execute_async_v3(self.memory.stream_handle)
            if ran:
                self.memory.to_host(out, self._dev_out)
            self.memory.synchronize()
        except RuntimeError as exc:  # torch's CUDA errors; cuda-python's arrive as TrapclsError already
            raise cuda_failure(f"running {self.engine_path.name}", exc) from exc
        if not ran:
            raise TrapclsError(
                f"TensorRT could not run the engine {self.engine_path} (execute_async_v3 failed; the TensorRT log "
                f"above says why). Rebuild it on this machine with `trapcls export tensorrt "
                f"{self.engine_path.parent.parent}`, or classify with --backend onnxruntime meanwhile.")
        return np.array(out[:n], dtype=np.float32)

    def close(self) -> None:
        self.memory.close()
