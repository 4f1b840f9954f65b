"""How much of one memory mapping is resident in this process, read from /proc/self/smaps (Linux).

The tests of GGUFFile.release and of the weight loader use it to check which file pages a load keeps resident.
"""

from __future__ import annotations

import numpy as np


def mapping_rss_kb(view: np.ndarray) -> int:
    """Resident kB of the whole mapping that holds ``view``'s first byte (e.g. a GGUFFile's mmap)."""
    address = view.ctypes.data
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):               # "start-end perms offset dev inode path"
                start, end = (int(a, 16) for a in head.split("-"))
                inside = start <= address < end
            elif inside and head == "Rss:":
                return int(line.split()[1])
    raise LookupError(f"no mapping holds address {address:#x}")
