"""The built-in cell kinds of `robustmm run`, one file per config section.

Every module here is imported by :func:`robustmm.job.registry.cell_kinds`; a module that defines
a class decorated by :func:`~robustmm.job.registry.register_cell` adds a job section and its cells.
"""
