"""A TensorRT engine's optimisation profile: its batch sizes and the builder's workspace limit.

Its own small module, free of heavy imports, because the CLI reads the option defaults from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from trapcls.core.options import check_options, option
from trapcls.core.system.exceptions import OptionError


@dataclass(frozen=True)
class Profile:
    """The optimisation profile's batch sizes and the builder's workspace limit."""

    min_batch: int = option(1, low=1)
    opt_batch: int = option(8, low=1)
    max_batch: int = option(16, low=1)
    workspace_mib: int = option(1024, low=64, hint="MiB")  # fits an 8 GB Jetson, whose GPU shares its memory

    def __post_init__(self) -> None:
        check_options(self)
        if self.opt_batch < self.min_batch:
            raise OptionError("opt_batch", f"must be at least {{min_batch}} ({self.min_batch}), got {self.opt_batch}")
        if self.max_batch < self.opt_batch:
            raise OptionError("max_batch", f"must be at least {{opt_batch}} ({self.opt_batch}), got {self.max_batch}")

    def flags(self) -> str:
        """The `trapcls export tensorrt` flags that give this profile."""
        return (f"--min-batch {self.min_batch} --opt-batch {self.opt_batch} --max-batch {self.max_batch} "
                f"--workspace {self.workspace_mib}")
