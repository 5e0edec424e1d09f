"""The live web view of a rig and its host (`nvscope web`, docs/web.md)."""

TAIL_INTERVAL_S = 0.02
"""How often running files are read for new rows by default (s): a pixel reaches the page in about half
of it plus a tail step (~2 ms per running file) plus the draw (bench_web: 40 ms median at 0.02 s, 51 ms
at 0.05 s)."""
