"""How many torch threads a command uses: asked for, inherited, or chosen for a shared machine.

PyTorch starts one thread per core. When other processes also compute (a second run, a test
run, the workers of ``tfs check --jobs``, ``torchrun``'s processes), threads outnumber cores and
everything slows many times over. So unless told (``--threads``, ``TFS_THREADS``,
``OMP_NUM_THREADS``), a command takes the cores the machine is not already using, split among
the processes ``torchrun`` started on this machine.
"""

import os


def default_threads(one_is_best: bool = False) -> int:
    """The environment's choice, else 1 (``one_is_best``), else the idle cores per process."""
    for variable in ("TFS_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(variable, "")
        if text.isdigit() and int(text) > 0:
            return int(text)
    if one_is_best:
        return 1
    cores = os.cpu_count() or 1
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    processes = int(local) if local.isdigit() and int(local) > 0 else 1
    try:
        busy = round(os.getloadavg()[0])
    except (OSError, AttributeError):
        busy = 0
    idle = max(1, cores - busy) if processes == 1 else cores
    return max(1, idle // processes)


def use_threads(threads: int | None, one_is_best: bool = False) -> int:
    """Set torch's thread count (``threads``, else :func:`default_threads`); returns it."""
    import torch

    chosen = threads or default_threads(one_is_best)
    torch.set_num_threads(chosen)
    return chosen
