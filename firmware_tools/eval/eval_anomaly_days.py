"""Learning from one, two or three days: false episodes per hour and detection on the field set.

    python firmware_tools/eval/eval_anomaly_days.py factory-01,mine-01,powerplant-01,gearbox-01,transformer-01,blower-01,compressor-01,conveyor-01 \
        > firmware_tools/eval/results/anomaly_days.txt

Per machine ID (a folder of ``build_machines.py --set field``; ``MACHINES_FIELD`` names the set,
default firmware_tools/work/machines_field): one day = the 10 train files; two days = 5 train
files + 5 minutes rendered on another day (day seed 5000, never a test or stream day); three
days = 4 train files + 3 minutes each of two other days. The recordings go to
``AnomalyModel.fit(recordings=)`` as ``edge-runtime anomaly learn -i day1.wav day2.wav`` passes
them; false episodes per hour on the ID's 5-minute streams and the share of anomalous clips
with an episode, both at the model's own threshold (budget 1/h), GMM.
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "data"))
import machines_field as F  # noqa: E402
from eval_anomaly import read  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from edge_runtime.anomaly import AnomalyModel, Hysteresis  # noqa: E402
from edge_runtime.features import LogMelStats, extract, make_extractor  # noqa: E402

cfg=LogMelStats().config()
ex=lambda x: extract(make_extractor(cfg),x,16000)
rows=[]
with threadpool_limits(1):
  for name in sys.argv[1].split(','):
    d=os.path.join(os.environ.get('MACHINES_FIELD', 'firmware_tools/work/machines_field'), name)
    fam,idx=name.rsplit('-',1); mid=F.MachineID(fam,int(idx))
    tr=sorted(glob.glob(d+'/train/*.wav'))
    S=[ex(read(f)) for f in sorted(glob.glob(d+'/stream/*.wav'))]
    test=sorted(glob.glob(d+'/test/anomaly*.wav')); T=[ex(read(f)) for f in test]
    out=[name]
    for mode in ("one day","two days","three days"):
        X0=np.concatenate([ex(read(f)) for f in tr[:10 if mode=="one day" else (5 if mode=="two days" else 4)]])
        parts=[X0]
        for k in range({"one day":0,"two days":1,"three days":2}[mode]):
            mins=5 if mode=="two days" else 3
            parts.append(np.concatenate([ex(F.render(mid,60,990_000+100*k+i,day=5000+k)) for i in range(mins)]))
        X=np.concatenate(parts)
        m=AnomalyModel.fit(X,'gmm',features=cfg,sample_rate=16000,recordings=[len(p) for p in parts] if len(parts)>1 else None)
        h=lambda: Hysteresis.for_model(m)
        def n_ep(F_):
            hh=h(); return sum(hh.update(float(v))>0 for v in m.score_batch(F_))
        fa=sum(n_ep(s) for s in S)/(sum(len(s) for s in S)*0.032/3600)
        det=np.mean([n_ep(t)>0 for t in T])
        out.append(f"{mode}: FA/h {fa:.1f} det {det:.2f}")
    print(" | ".join(out), flush=True)
