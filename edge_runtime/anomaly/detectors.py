"""Anomaly detectors fitted with scikit-learn, stored as explicit arrays, scored without sklearn.

Every detector sees standardized feature vectors ``z = (x - center) / scale`` and gives a
score that grows with abnormality:

``gmm``        -log p(z) under a full-covariance Gaussian mixture (``GaussianMixture``; one
               component by default, i.e. the Mahalanobis distance, best on the design IDs)
``kmeans``     squared distance to the nearest of ``k`` centroids (``KMeans``, as Edge Impulse),
               in PCA-whitened units (so it is a Mahalanobis distance of the normal data)
``iforest``    the Isolation Forest anomaly score ``2^(-E[h(z)] / c(n))`` (``IsolationForest``),
               on PCA-whitened features
``autoencoder`` mean squared reconstruction error, each feature's divided by its mean on the
               training frames, of a dense autoencoder (``MLPRegressor``
               ``D -> 64 -> 16 -> 64 -> D``), exported as an INT8 QDQ ONNX model and run
               through the model layer (:mod:`edge_runtime.backends`, ONNX Runtime)

The fitted state is plain arrays (means, Cholesky factors of precisions, centroids, tree
node tables, INT8 weights as ONNX bytes) so a state file never holds a pickle. Each
detector has a batch scorer (``score_batch``, NumPy, for thresholds and evaluation) and a
per-frame :class:`FrameScorer` whose ``score(x)`` allocates nothing after construction;
both give the same numbers (tests/test_anomaly.py).
"""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np

DETECTORS = ("gmm", "kmeans", "iforest", "autoencoder")
_LOG2PI = math.log(2.0 * math.pi)
#: how to install what fitting needs (scoring needs NumPy only, and ONNX Runtime for the autoencoder)
LEARN_EXTRA = "pip install 'edge-runtime[learn]'"


def require_learn(what: str = "learning") -> None:
    """Raise :class:`~edge_runtime.errors.MissingExtraError` naming the ``learn`` extra unless
    scikit-learn (and threadpoolctl, which comes with it) can be imported."""
    try:
        import sklearn  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError as e:
        from ..errors import MissingExtraError

        raise MissingExtraError(f"{what} needs scikit-learn ({e}); install the learn extra: {LEARN_EXTRA}") from None


def _c(n):
    """Average path length of an unsuccessful BST search over ``n`` points (Isolation Forest)."""
    n = np.asarray(n, np.float64)
    out = np.zeros_like(n)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


# ---- fitting: sklearn estimator -> arrays -----------------------------------------------

def fit_gmm(Z, n_components=1, seed=0, reg_covar=1e-2, max_iter=60, **_):
    from sklearn.mixture import GaussianMixture

    g = GaussianMixture(n_components=int(n_components), covariance_type="full", reg_covar=float(reg_covar),
                        random_state=seed, max_iter=int(max_iter), n_init=1).fit(Z)
    P = g.precisions_cholesky_
    logdet = np.log(np.diagonal(P, axis1=1, axis2=2)).sum(axis=1)
    const = np.log(g.weights_) + logdet - 0.5 * Z.shape[1] * _LOG2PI
    return {"means": g.means_, "prec_chol": P, "const": const}


def whitening(Z, floor=1e-3):
    """PCA whitening ``(D, D)``: distances after it are Mahalanobis distances of the normal
    data (eigenvalues floored at ``floor`` x their mean, so near-constant directions do not
    explode)."""
    C = np.cov(np.asarray(Z, np.float64), rowvar=False)
    vals, vecs = np.linalg.eigh(C)
    vals = np.maximum(vals, floor * max(float(vals.mean()), 1e-12))
    return (vecs / np.sqrt(vals)).astype(np.float32)


def fit_kmeans(Z, n_clusters=8, seed=0, whiten=True, **_):
    from sklearn.cluster import KMeans

    out = {}
    if whiten:
        out["whiten"] = whitening(Z)
        Z = Z @ out["whiten"]
    k = min(int(n_clusters), max(1, len(Z) // 4))
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(Z)
    out["centers"] = km.cluster_centers_
    return out


def fit_iforest(Z, n_estimators=100, max_samples=256, seed=0, whiten=True, **_):
    from sklearn.ensemble import IsolationForest

    W = whitening(Z) if whiten else None
    if W is not None:
        Z = Z @ W

    f = IsolationForest(n_estimators=int(n_estimators), max_samples=min(int(max_samples), len(Z)),
                        random_state=seed).fit(Z)
    trees = [e.tree_ for e in f.estimators_]
    T = len(trees)
    N = max(t.node_count for t in trees)
    feat = np.zeros((T, N), np.int32)
    thr = np.zeros((T, N), np.float32)
    left = np.zeros((T, N), np.int32)
    right = np.zeros((T, N), np.int32)
    value = np.zeros((T, N), np.float32)
    max_depth = 0
    for i, (t, est_feats) in enumerate(zip(trees, f.estimators_features_)):
        n = t.node_count
        depth = np.zeros(n, np.int64)
        for j in range(n):  # parents come before children in sklearn's node order
            for c in (t.children_left[j], t.children_right[j]):
                if c >= 0:
                    depth[c] = depth[j] + 1
        max_depth = max(max_depth, int(depth.max()))
        leaf = t.children_left[:n] < 0
        idx = np.arange(n)
        feat[i, :n] = np.where(leaf, 0, np.asarray(est_feats)[np.maximum(t.feature[:n], 0)])
        # x <= thr goes left; in float32 (the frame's precision) the comparison must agree
        thr[i, :n] = np.where(leaf, np.finfo(np.float32).max, t.threshold[:n]).astype(np.float32)
        left[i, :n] = np.where(leaf, idx, t.children_left[:n])
        right[i, :n] = np.where(leaf, idx, t.children_right[:n])
        value[i, :n] = np.where(leaf, depth + _c(t.n_node_samples[:n]), 0.0)
    out = {"feature": feat, "threshold": thr, "left": left, "right": right, "leaf_value": value,
           "steps": np.array([max_depth], np.int32),
           "norm": np.array([_c(np.array([f.max_samples_]))[0]], np.float64)}
    if W is not None:
        out["whiten"] = W
    return out


def fit_autoencoder(Z, hidden=(64, 16, 64), seed=0, max_iter=30, time_budget_s=5.0, **_):
    """Train epoch by epoch (``partial_fit``) until the loss stops improving, ``max_iter``
    epochs, or ``time_budget_s`` seconds (a slow board still finishes learning in bounded
    time; a fast one is never cut short at the defaults)."""
    import time as _time

    from sklearn.neural_network import MLPRegressor

    from .onnx_writer import dense_int8

    ae = MLPRegressor(hidden_layer_sizes=tuple(int(h) for h in hidden), activation="relu", solver="adam",
                      alpha=1e-4, batch_size=128, learning_rate_init=2e-3, random_state=seed)
    rng = np.random.default_rng(seed)
    t0 = _time.perf_counter()
    best, stale = np.inf, 0
    for _epoch in range(int(max_iter)):
        order = rng.permutation(len(Z))
        ae.partial_fit(Z[order], Z[order])
        loss = float(ae.loss_)
        if loss < best - 1e-4 * abs(best):
            best, stale = loss, 0
        else:
            stale += 1
        if stale >= 4 or _time.perf_counter() - t0 > float(time_budget_s):
            break
    onnx = dense_int8(ae.coefs_, ae.intercepts_, Z)
    out = {"onnx": np.frombuffer(onnx, np.uint8).copy()}
    # the error of each feature weighted by how well the (INT8) model reconstructs it on normal
    # data: features it cannot predict (noise-dominated bands) would otherwise swamp the rest
    err = (_session(out).run({"x": np.ascontiguousarray(Z, np.float32)})["y"] - Z).astype(np.float64) ** 2
    out["inv_err"] = (1.0 / np.maximum(err.mean(axis=0), 1e-4)).astype(np.float32)
    return out


def preload(detector: str) -> None:
    """Import what fitting ``detector`` needs, in the calling (main) thread: a fit on a
    background thread that is still running when the interpreter shuts down cannot import
    modules that register exit handlers (joblib, threadpoolctl) any more.  Without
    scikit-learn: a :class:`~edge_runtime.errors.MissingExtraError` naming the ``learn`` extra."""
    require_learn(f"learning (anomaly detector {detector!r})")
    import threadpoolctl  # noqa: F401
    import sklearn.utils.parallel  # noqa: F401

    mod = {"gmm": "sklearn.mixture", "kmeans": "sklearn.cluster", "iforest": "sklearn.ensemble",
           "autoencoder": "sklearn.neural_network"}[detector]
    __import__(mod)
    if detector == "autoencoder":
        from ..backends import get_backend

        get_backend("onnxruntime").available()
        import onnxruntime  # noqa: F401


FIT = {"gmm": fit_gmm, "kmeans": fit_kmeans, "iforest": fit_iforest, "autoencoder": fit_autoencoder}

#: arrays each detector's state must hold, with their ranks
ARRAYS = {"gmm": {"means": 2, "prec_chol": 3, "const": 1}, "kmeans": {"centers": 2},
          "iforest": {"feature": 2, "threshold": 2, "left": 2, "right": 2, "leaf_value": 2, "steps": 1, "norm": 1},
          "autoencoder": {"onnx": 1, "inv_err": 1}}


# ---- the autoencoder's model file -------------------------------------------------------

def onnx_path(onnx_bytes: np.ndarray, cache_dir: str | None = None) -> str:
    """Write the autoencoder's ONNX bytes once to a content-addressed file (the model layer
    loads files); its name is the bytes' sha256, so a stale or edited file is never used."""
    from ..atomic import write_bytes
    from ..backends.base import default_cache_dir

    data = bytes(onnx_bytes)
    digest = hashlib.sha256(data).hexdigest()
    d = cache_dir or str(default_cache_dir("anomaly"))
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"autoencoder-{digest[:24]}.onnx")
    try:
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() == digest:
                return path
    except OSError:
        pass
    write_bytes(path, data)
    return path


def _session(arrays):
    from ..backends import load_session

    return load_session(onnx_path(arrays["onnx"]), backend="onnxruntime", threads=1)


# ---- batch scoring (NumPy) ---------------------------------------------------------------

def score_batch(detector: str, arrays: dict, Z: np.ndarray) -> np.ndarray:
    """Scores of standardized frames ``Z`` (n, D), float64."""
    Z = np.asarray(Z, np.float32)
    if "whiten" in arrays:
        Z = Z @ arrays["whiten"]
    if detector == "gmm":
        Zd = Z.astype(np.float64)
        logp = np.empty((len(Z), len(arrays["const"])))
        for k, (mu, P, c) in enumerate(zip(arrays["means"], arrays["prec_chol"], arrays["const"])):
            y = (Zd - mu) @ P
            logp[:, k] = c - 0.5 * np.einsum("ij,ij->i", y, y)
        m = logp.max(axis=1)
        return -(m + np.log(np.exp(logp - m[:, None]).sum(axis=1)))
    if detector == "kmeans":
        C = arrays["centers"].astype(np.float64)
        Zd = Z.astype(np.float64)
        d = (Zd * Zd).sum(1)[:, None] - 2 * Zd @ C.T + (C * C).sum(1)[None, :]
        return np.maximum(d.min(axis=1), 0.0)
    if detector == "iforest":
        feat, thr, left, right, val = (arrays[k] for k in ("feature", "threshold", "left", "right", "leaf_value"))
        T, N = feat.shape
        base = (np.arange(T) * N)[None, :]
        idx = np.zeros((len(Z), T), np.int64)
        rows = np.arange(len(Z))[:, None]
        ff, tt, ll, rr = feat.ravel(), thr.ravel(), left.ravel(), right.ravel()
        for _ in range(int(arrays["steps"][0])):
            flat = base + idx
            go_left = Z[rows, ff[flat]] <= tt[flat]
            idx = np.where(go_left, ll[flat], rr[flat])
        depth = val.ravel()[base + idx].astype(np.float64).mean(axis=1)
        return 2.0 ** (-depth / arrays["norm"][0])
    if detector == "autoencoder":
        sess = _session(arrays)
        y = np.empty_like(Z)
        for s in range(0, len(Z), 4096):
            y[s:s + 4096] = sess.run({"x": np.ascontiguousarray(Z[s:s + 4096])})["y"]
        return (((y.astype(np.float64) - Z) ** 2) * arrays["inv_err"]).mean(axis=1)
    raise ValueError(f"detector {detector!r} is not known (expected one of {', '.join(DETECTORS)})")


# ---- per-frame scoring (allocation-free) ---------------------------------------------------

class FrameScorer:
    """Scores one frame at a time into preallocated buffers: standardize, then the detector."""

    def __init__(self, detector: str, arrays: dict, center: np.ndarray, scale: np.ndarray):
        self.detector = detector
        D = center.shape[0]
        self.center = center.astype(np.float32)
        self.inv_scale = (1.0 / scale).astype(np.float32)
        self.z = np.zeros(D, np.float32)
        self.W = arrays.get("whiten")
        if self.W is not None:
            self.W = self.W.astype(np.float32)
            self.z0 = np.zeros((1, D), np.float32)
            self.z_2 = self.z.reshape(1, D)
        a = arrays
        if detector == "gmm":
            K = a["means"].shape[0]
            self.means = a["means"].astype(np.float64)
            self.P = a["prec_chol"].astype(np.float64)
            self.const = a["const"].astype(np.float64)
            self.zd = np.zeros((1, D))
            self.ones = np.ones((K, 1))
            self.d = np.zeros((K, 1, D))
            self.d2 = self.d.reshape(K, D)
            self.y = np.zeros((K, 1, D))
            self.q = np.zeros(K)
            self._score = self._gmm
        elif detector == "kmeans":
            K = a["centers"].shape[0]
            self.centers = a["centers"].astype(np.float32)
            self.d = np.zeros((K, D), np.float32)
            self.ones = np.ones((K, 1), np.float32)
            self.z2 = self.z.reshape(1, D)
            self.q = np.zeros(K, np.float32)
            self._score = self._kmeans
        elif detector == "iforest":
            T, N = a["feature"].shape
            self.base = (np.arange(T) * N).astype(np.int64)
            self.ff = a["feature"].ravel().astype(np.int64)
            self.tt = a["threshold"].ravel().astype(np.float32)
            self.ll = a["left"].ravel().astype(np.int64)
            self.rr = a["right"].ravel().astype(np.int64)
            self.vv = a["leaf_value"].ravel().astype(np.float64)
            self.steps = int(a["steps"][0])
            self.norm = float(a["norm"][0])
            self.idx = np.zeros(T, np.int64)
            self.flat = np.zeros(T, np.int64)
            self.fi = np.zeros(T, np.int64)
            self.xv = np.zeros(T, np.float32)
            self.tv = np.zeros(T, np.float32)
            self.go = np.zeros(T, bool)
            self.lv = np.zeros(T, np.int64)
            self.rv = np.zeros(T, np.int64)
            self.dv = np.zeros(T, np.float64)
            self._score = self._iforest
        elif detector == "autoencoder":
            self.session = _session(a)
            self.x_in = np.zeros((1, D), np.float32)
            self.y_out = np.zeros((1, D), np.float32)
            self.call = self.session.bind({"x": self.x_in}, {"y": self.y_out})
            self.err = np.zeros(D, np.float32)
            self.werr = np.zeros(D, np.float32)
            self.inv_err = a["inv_err"].astype(np.float32)
            self._score = self._autoencoder
        else:
            raise ValueError(f"detector {detector!r} is not known (expected one of {', '.join(DETECTORS)})")

    def score(self, x: np.ndarray) -> float:
        """Score of one raw feature vector ``x`` (D,) float32."""
        np.subtract(x, self.center, out=self.z)
        np.multiply(self.z, self.inv_scale, out=self.z)
        if self.W is not None:
            self.z0[0] = self.z
            np.matmul(self.z0, self.W, out=self.z_2)
        return self._score()

    def _gmm(self) -> float:
        # broadcasting would make NumPy allocate a buffer per call: repeat z by an outer product
        self.zd[0] = self.z
        np.matmul(self.ones, self.zd, out=self.d2)
        np.subtract(self.d2, self.means, out=self.d2)
        np.matmul(self.d, self.P, out=self.y)
        np.square(self.y, out=self.y)
        np.sum(self.y, axis=(1, 2), out=self.q)
        np.multiply(self.q, -0.5, out=self.q)
        np.add(self.q, self.const, out=self.q)
        m = self.q.max()
        np.subtract(self.q, m, out=self.q)
        np.exp(self.q, out=self.q)
        return -(float(m) + math.log(float(self.q.sum())))

    def _kmeans(self) -> float:
        np.matmul(self.ones, self.z2, out=self.d)
        np.subtract(self.d, self.centers, out=self.d)
        np.square(self.d, out=self.d)
        np.sum(self.d, axis=1, out=self.q)
        return float(self.q.min())

    def _iforest(self) -> float:
        idx, flat = self.idx, self.flat
        idx[...] = 0
        for _ in range(self.steps):
            np.add(self.base, idx, out=flat)
            self.ff.take(flat, out=self.fi)
            self.z.take(self.fi, out=self.xv)
            self.tt.take(flat, out=self.tv)
            np.less_equal(self.xv, self.tv, out=self.go)
            self.ll.take(flat, out=self.lv)
            self.rr.take(flat, out=self.rv)
            np.copyto(idx, self.rv)
            np.copyto(idx, self.lv, where=self.go)
        np.add(self.base, idx, out=flat)
        self.vv.take(flat, out=self.dv)
        return 2.0 ** (-float(self.dv.mean()) / self.norm)

    def _autoencoder(self) -> float:
        self.x_in[0] = self.z
        self.call.run()
        np.subtract(self.y_out[0], self.z, out=self.err)
        np.multiply(self.err, self.inv_err, out=self.werr)
        return float(np.dot(self.werr, self.err)) / self.err.shape[0]
