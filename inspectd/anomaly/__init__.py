"""Anomaly detection taught on good parts only (PatchCore-style).

Runtime side (numpy only): `score` turns a graph's `score`/`anomaly_map` outputs into findings,
`calibrate` sets the threshold from good parts' scores. Fitting side (torch, the `train` extra):
`backbone`, `patchcore` and `fit`, imported only by `inspectd fit-anomaly`; the daemon never imports them.
"""
