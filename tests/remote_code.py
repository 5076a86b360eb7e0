"""Shared by the tests that load checkpoints in a process where hfpipe cannot be imported."""

# The first lines of such a subprocess's script: hfpipe is blocked, and the check proves it.
BLOCK_HFPIPE = """
import sys, json, os, torch
class BlockHfpipe:
    def find_spec(self, name, path=None, target=None):
        if name == "hfpipe" or name.startswith("hfpipe."):
            raise ImportError("hfpipe is blocked in this process")
sys.meta_path.insert(0, BlockHfpipe())
sys.path = [p for p in sys.path if p not in ("", ".")]
try:
    import hfpipe
    raise SystemExit("hfpipe was importable")
except ImportError:
    pass
"""
