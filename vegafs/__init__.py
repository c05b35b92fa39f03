"""vegafs: a scriptable FUSE filesystem over an append-only, content-addressed store.

Layers (imports point one way, see docs/architecture.md):
    fuse_ops -> fs -> store      (the mount)
    hooks -> vm, fs              (Vega scripts on filesystem events)
    drivers -> vm, fs, store     (the VFS drivers the VM reaches data through)
    cli -> everything            (the `vegafs` command)
The store imports nothing from the others; the VM imports nothing from fs, store or fuse_ops.
"""

__version__ = "0.1.0"
