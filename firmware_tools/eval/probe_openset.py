"""Probe for issue 21's open set: how well the shipped classifier's own outputs reject sounds of
no class, before any open-set training.

    python firmware_tools/eval/probe_openset.py      # needs build_classify.py's output in firmware_tools/work/classify16k

Out-of-set sounds: the OpenTTD OpenSFX recordings that build_classify.py gives no class (animals,
crashes, explosions, a crowd, wind, a smithy, trees, a till, ...), 1 s windows every 0.5 s (at most 20
per sound) at -25 dBFS. Known: TRAIN windows (7,000) for the class statistics, VAL windows (3,000) for
the threshold at 3 / 5 / 10 % rejected, TEST windows (3,500) for the known-clip rejection reported.
Scores: maximum softmax probability (MSP) and the Mahalanobis distance of the embedding to the
nearest class mean (shared covariance, 0.1 % shrinkage). A probe, not an evaluation: the shipped
model was fitted on TRAIN + VAL, so VAL thresholds are optimistic.
"""
import sys, struct, io, wave, re, numpy as np, soxr
import os
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "data"))
os.chdir(ROOT)
import build_classify as bc
from edge_runtime.classify.features import logmel_windows, CLIP_SAMPLES
from edge_runtime.backends import load_session
OOS = [0,1,4,10,15,16,17,18,19,20,23,29,30,31,36,37,38,39,41,48,52,53,54,55,58,66,67,68,72]
d=open(bc.OPENSFX_CAT,"rb").read()
clips=[]; owner=[]
for i in OOS:
    off,size=struct.unpack("<II", d[i*8:i*8+8]); off&=0x7FFFFFFF; nl=d[off]
    w=wave.open(io.BytesIO(d[off+1+nl:off+size])); raw=w.readframes(w.getnframes()); ch=w.getnchannels()
    raw=raw[:len(raw)-len(raw)%(2*ch)]
    x=np.frombuffer(raw,"<i2").reshape(-1,ch).mean(1)/32768.0
    x=soxr.resample(x, w.getframerate(), 16000).astype(np.float32)
    if len(x) < CLIP_SAMPLES: x=np.pad(x,(0,CLIP_SAMPLES-len(x)))
    for s in range(0, len(x)-CLIP_SAMPLES+1, CLIP_SAMPLES//2)[:20]:
        c=x[s:s+CLIP_SAMPLES].copy(); r=np.sqrt(np.mean(c**2))
        if r < 1e-4: continue
        clips.append(c*(10**(-25/20)/r)); owner.append(i)
X_oos=logmel_windows(np.stack(clips)); owner=np.array(owner)
print("OOS windows", len(X_oos), "from", len(set(owner)), "sounds")
s=load_session("models_int8/classify/classify_fp32.onnx", backend="onnxruntime", threads=1)
def run(X):
    P=[];E=[]
    for x in X:
        o=s.run({"logmel":x[None].astype(np.float32)}); P.append(np.array(o["probs"][0])); E.append(np.array(o["embedding"][0]))
    return np.array(P), np.array(E)
D={k: np.load(f"firmware_tools/work/classify16k/{k}.npz") for k in ("train","val","test")}
rng=np.random.default_rng(0)
sub=lambda k,n: np.sort(rng.choice(len(D[k]["y"]), min(n,len(D[k]["y"])), replace=False))
it, iv, ie = sub("train",7000), sub("val",3000), sub("test",3500)
Ptr,Etr=run(D["train"]["x"][it]); ytr=D["train"]["y"][it]
Pv,Ev=run(D["val"]["x"][iv]); Pe,Ee=run(D["test"]["x"][ie]); Po,Eo=run(X_oos)
mu=np.stack([Etr[ytr==c].mean(0) for c in range(7)])
R=Etr-mu[ytr]; C=R.T@R/len(R); C+=1e-3*np.trace(C)/len(C)*np.eye(len(C)); Pm=np.linalg.inv(C)
def maha(E):
    dd=[np.einsum("ij,jk,ik->i", E-m, Pm, E-m) for m in mu]; return np.min(dd,0)
for name, f in (("MSP", lambda P,E: -P.max(1)), ("Mahalanobis", lambda P,E: maha(E))):
    sv, se, so = f(Pv,Ev), f(Pe,Ee), f(Po,Eo)
    for rej in (0.03, 0.05, 0.10):
        t=np.quantile(sv, 1-rej)
        print(f"{name:12s} VAL rej {rej:.0%}: TEST known rejected {np.mean(se>t):.1%}, OOS rejected {np.mean(so>t):.1%}")
pred=Po.argmax(1); print("OOS taken for:", np.bincount(pred, minlength=7))
