"""A TensorRT engine's optimisation profile: its batch sizes and the builder's workspace limit.

Its own small module, free of heavy imports, because the CLI reads the option defaults from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from trapcls.core.system.exceptions import BundleError


@dataclass(frozen=True)
class Profile:
    """The optimisation profile's batch sizes and the builder's workspace limit."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 16
    workspace_mib: int = 1024  # fits an 8 GB Jetson, whose GPU shares memory with the CPU

    def check(self) -> None:
        """Raise BundleError unless the batch sizes are ordered and the workspace is usable."""
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise BundleError(f"Batch sizes must satisfy 1 <= --min-batch <= --opt-batch <= --max-batch; got "
                              f"{self.min_batch}, {self.opt_batch}, {self.max_batch}.")
        if self.workspace_mib < 64:
            raise BundleError(f"--workspace is in MiB and must be at least 64, got {self.workspace_mib}.")

    def flags(self) -> str:
        """The `trapcls export tensorrt` flags that give this profile."""
        return (f"--min-batch {self.min_batch} --opt-batch {self.opt_batch} --max-batch {self.max_batch} "
                f"--workspace {self.workspace_mib}")
