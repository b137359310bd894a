"""Where faceattr depends on how Lightning behaves beyond its documented API.

Written for, and checked against, Lightning 2.6.6, the version pyproject.toml pins: tests/test_lightning_workarounds.py
pins that version and fails when Lightning stops behaving as described here, so that a Lightning upgrade starts with a
look at this module. Nothing else in ``faceattr/`` reads Lightning's internals (``tests/test_imports.py``).
"""

from __future__ import annotations

import subprocess
import threading
from typing import Any

from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

LIGHTNING_VERSION = "2.6.6"

#: The name of the thread Lightning's subprocess launcher starts to watch a DDP job's rank processes
#: (``lightning/fabric/strategies/launchers/subprocess_script.py``, ``_ChildProcessObserver``).
OBSERVER_THREAD = "child-process-observer"


def disarm_process_observers(threads_before: set[threading.Thread]) -> list[subprocess.Popen]:
    """Stop the child-process observers started since ``threads_before`` from killing this process; return the rank
    processes they watched.

    The observer checks its processes every few seconds and, when one has exited with an error, SIGKILLs the others
    and this (the launching) process. Lightning starts one per DDP fit and never stops it, and gives no public way to,
    so in a process that runs several jobs one after the other (a sweep) a rank of a finished job that exits with an
    error would kill the next job. The observer reads the list its launcher was given (``_child_processes``, the
    launcher's ``procs``): emptied, its next check finds every process done and it ends without killing anyone.
    """
    children: list[subprocess.Popen] = []
    for thread in threading.enumerate():
        if thread in threads_before or thread.name != OBSERVER_THREAD:
            continue
        watched = getattr(thread, "_child_processes", None)
        if isinstance(watched, list):
            children += watched
            watched.clear()
    return children


#: The columns Lightning's model summary adds when it ran the model on its ``example_input_array``: the same forward
#: pass is the only one its FLOP counter measures (``Summary._forward_example_input``), so without them every FLOPs
#: figure is a 0 that was never counted.
MEASURED_COLUMNS = ("In sizes", "Out sizes")
FLOPS_COLUMN = "FLOPs"


class ModelSummary(RichModelSummary):
    """Lightning's default model summary (the rich table), with the FLOPs column and total only when they were
    measured.

    Lightning 2.6 always prints a ``FLOPs`` column and ``Total FLOPs``, but counts FLOPs only while it runs the model
    on ``example_input_array``; faceattr's models set none, so the column was zeros and the total "0", which reads as
    a measurement. With an example input Lightning's own table is printed unchanged. Configured in
    ``conf/callbacks/default.yaml`` (``callbacks.model_summary``).
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        names = [name for name, _ in summary_data]
        if any(name in names for name in MEASURED_COLUMNS):
            RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != FLOPS_COLUMN]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            right = name.startswith("Params")
            table.add_column(name, justify="right" if right else "left", style="dim" if name == " " else None)
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        totals = Table.grid(expand=True)
        totals.add_column()
        figures = (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
        )
        for label, value in figures:
            totals.add_row(f"[bold]{label}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(totals)
