"""JetClass (Qu, Li, Qian 2022) ROOT files: a TTree ``tree``, one jet per entry, with

    part_px, part_py, part_pz, part_energy   jagged: the constituents' momenta and energies, GeV
    label_QCD, label_Hbb, …, label_Tbl      one-hot: the jet's class

→ ``p4`` (n, N, 4) = (part_energy, part_px, part_py, part_pz) padded with zeros to N, the most
constituents of any jet in the files read, ``mask`` true for the constituents, ``label`` the
index of the set ``label_*`` branch. The classes present in the files read are numbered
0 … C−1 in the tree's branch order and named in ``meta.classes`` (``QCD,Tbqq`` for ZJetsToNuNu
and TTBar files: QCD = 0, top = 1). Each file holds one process, so a glob of several files
makes the classes (``--data 'JetClass/*_000.root'``). Read with uproot and awkward, entry
ranges at a time, so a set of files larger than memory streams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from symfw.core.errors import DataError
from symfw.core.formats import Reader
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import FileFormat

TREE = "tree"
PARTICLES = ("part_energy", "part_px", "part_py", "part_pz")  # (E, px, py, pz)
COUNT_STEP = 100_000  # entries per pass when counting constituents


class JetClassReader(Reader):
    """Entries of a JetClass tree as padded four-vectors and class indices."""

    def __init__(self, path: Path):
        import uproot

        self.path = path
        self.file = uproot.open(path)
        try:
            trees = [k.split(";")[0] for k, v in self.file.items() if hasattr(v, "num_entries")]
            if TREE not in trees:
                raise DataError(f"{path}: JetClass ROOT: no TTree '{TREE}' (found: {', '.join(trees) or 'none'})")
            self.tree = self.file[TREE]
            branches = list(self.tree.keys())
            missing = [b for b in PARTICLES if b not in branches]
            if missing:
                raise DataError(f"{path}: JetClass ROOT: tree '{TREE}' has no branch '{missing[0]}' (JetClass "
                                f"needs {', '.join(PARTICLES)} and one-hot label_* branches)")
            self.labels = [b for b in branches if b.startswith("label_")]
            if not self.labels:
                raise DataError(f"{path}: JetClass ROOT: tree '{TREE}' has no label_* branches (the one-hot classes)")
            n = int(self.tree.num_entries)
            n_part = self._most_constituents(n)
        except BaseException:
            self.file.close()
            raise
        self.classes = tuple(b.removeprefix("label_") for b in self.labels)
        self.columns = {"p4": ((n, n_part, 4), np.dtype(np.float64)), "mask": ((n, n_part), np.dtype(bool)),
                        "label": ((n,), np.dtype(np.int64))}
        self.meta = {}

    def _most_constituents(self, n: int) -> int:
        import awkward as ak

        most = 0
        for start in range(0, n, COUNT_STEP):
            energy = self.tree[PARTICLES[0]].array(entry_start=start, entry_stop=min(n, start + COUNT_STEP),
                                                   library="ak")
            if energy.ndim != 2:
                raise DataError(f"{self.path}: JetClass ROOT: {PARTICLES[0]}: expected one list of numbers per jet")
            most = max(most, int(ak.max(ak.num(energy), initial=0)))
        return most

    def read(self, start, stop, names=None):
        import awkward as ak

        arrays = self.tree.arrays([*PARTICLES, *self.labels], entry_start=start, entry_stop=stop, library="ak")
        counts = [ak.to_numpy(ak.num(arrays[b])) for b in PARTICLES]
        if any((c != counts[0]).any() for c in counts[1:]):
            jet = start + int(np.argmax(np.any([c != counts[0] for c in counts[1:]], axis=0)))
            raise DataError(f"{self.path}: JetClass ROOT: jet {jet} has different numbers of "
                            f"{', '.join(PARTICLES)} entries")
        width = self.n_particles
        p4 = np.stack([ak.to_numpy(ak.fill_none(ak.pad_none(arrays[b], width, clip=True), 0.0)) for b in PARTICLES],
                      -1).astype(np.float64)
        mask = np.arange(width)[None, :] < counts[0][:, None]
        onehot = np.stack([ak.to_numpy(arrays[b]) for b in self.labels], -1).astype(np.float64)
        set_ = onehot != 0
        bad = set_.sum(1) != 1
        if bad.any():
            jet = start + int(bad.argmax())
            raise DataError(f"{self.path}: JetClass ROOT: jet {jet} has {int(set_[bad.argmax()].sum())} label_* "
                            "branches set (expected exactly one)")
        return {"p4": p4, "mask": mask, "label": set_.argmax(1).astype(np.int64)}

    def close(self) -> None:
        self.file.close()


class JetClass(FileFormat):
    """JetClass ROOT: a TTree 'tree' with jagged part_px/py/pz/energy and one-hot label_* branches."""

    name = "jetclass"
    label = "JetClass ROOT"
    extensions = (".root",)
    requires = ("uproot", "awkward")
    extra = "formats"

    def sniff(self, path: Path) -> bool:
        with open(path, "rb") as fh:
            return fh.read(4) == b"root"

    def open(self, path: Path) -> JetClassReader:
        return JetClassReader(path)


@hookimpl
def register_formats(register):
    register(JetClass)
