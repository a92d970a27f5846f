"""Benchmarks of gpucnn's kernels and training step against PyTorch and the machine's peak.

- ``workload``: the standard shapes (issue 6) and the inputs of each op;
- ``timing``: median-of-repeats timers (wall clock, CUDA events);
- ``peak``: the CPU's or GPU's FP32 peak and memory bandwidth;
- ``reference``: PyTorch (or a NumPy baseline) timed in a separate process;
- ``suite``: ours and the reference in turns, one record per op and case;
- ``end_to_end``: training throughput of the zoo models;
- ``report``: table, JSON, bar chart; ``cli``: the ``gpucnn bench`` command.
"""
