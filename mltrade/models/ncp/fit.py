"""Model fitting: network configs from parameters, TensorFlow's threads and device, loss weights, the
compiled fold trainer and the per-fold predictions a trial is scored by."""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from mltrade.models.ncp.dataset import NCPDataset
from mltrade.models.ncp.model import NCPConfig, build_model, fit_skip_logistic, predict_proba, set_input_stats
from mltrade.models.ncp.scoring import directions, performance
from mltrade.models.ncp.settings import LOSSES, NCPSettings


#: a small network (the linear skip carries what a logistic regression finds; see NCPConfig.skip)
DEFAULT_PARAMS: Dict[str, Any] = {
    "dense1": 16, "dense2": 8, "dense_dropout": 0.1, "dense_slope": 0.1, "ltc_units": 8, "ltc_units2": 6,
    "branch_head": 2, "head_units": 4, "head_dropout": 0.1, "head_slope": 0.1, "learning_rate": 3e-3,
    "weight_decay": 1e-3, "skip_l2": 0.03, "epochs": 20, "batch_size": 64,
}


def config_from_params(params: Dict[str, Any], n_daily: int, s: NCPSettings, seed: int = 0) -> NCPConfig:
    """``NCPConfig`` from a flat parameter dict (Optuna's or :data:`DEFAULT_PARAMS`)."""
    p = {**DEFAULT_PARAMS, **params}
    return NCPConfig(n_daily=n_daily, n_candles=s.n_candles, cell=p.get("cell", s.cell),
                     dense_units=(int(p["dense1"]), int(p["dense2"])),
                     dense_dropout=float(p["dense_dropout"]),
                     dense_slope=float(p["dense_slope"]), ltc_units=int(p["ltc_units"]),
                     ltc_units2=int(p["ltc_units2"]), branch_head=int(p["branch_head"]),
                     head_units=int(p["head_units"]), head_dropout=float(p["head_dropout"]),
                     head_slope=float(p["head_slope"]), learning_rate=float(p["learning_rate"]),
                     weight_decay=float(p.get("weight_decay", 0.0)), skip_l2=float(p.get("skip_l2", 0.0)),
                     skip_fit=str(p.get("skip_fit", "logistic")),
                     residual_z=float(p.get("residual_z", NCPConfig.residual_z)), seed=seed)


def configure_tensorflow(threads: int = 1) -> str:
    """Set TensorFlow's CPU thread pools (before its first op; later calls leave them) and return the
    device training runs on: ``"GPU:0 (<name>)"`` when TensorFlow sees a GPU, else ``"CPU"``."""
    import tensorflow as tf
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # TensorFlow already started: its pools stay as they are
    return device_name()


def device_name() -> str:
    """The device TensorFlow trains on: the first visible GPU (name), else CPU with its core count."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        except (ValueError, RuntimeError):
            name = gpus[0].name
        return f"GPU:0 ({name})"
    return f"CPU ({os.cpu_count()} cores)"


def use_jit(setting: str) -> bool:
    """Whether the train step is XLA-compiled: ``auto`` = only on a GPU (on CPU the compile of the
    recurrent cell costs more than it saves over a trial's epochs; see benchmarks/bench_ncp.py)."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return device_name().startswith("GPU")


class _History:
    """Per-epoch losses, shaped like Keras' ``History`` (``.history["loss"]``, ``["val_loss"]``)."""

    def __init__(self) -> None:
        self.history: Dict[str, list] = {"loss": [], "val_loss": []}


def _bce(y: np.ndarray, p: np.ndarray, w: Optional[np.ndarray] = None) -> float:
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    y = np.asarray(y, float)
    ll = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(ll.mean() if w is None else (ll * w).sum() / max(float(np.sum(w)), 1e-12))


def _session_bce(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-session cross-entropy."""
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    y = np.asarray(y, float)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _significant_gain(gain: np.ndarray, z: float) -> bool:
    """Whether per-session loss gains (weighted) have a mean above ``z`` standard errors (paired, one-sided;
    ``z`` = 0: any positive mean gain)."""
    g = np.asarray(gain, float)
    if len(g) == 0 or g.mean() <= 0:
        return False
    return z <= 0 or (len(g) > 1 and g.mean() > z * g.std(ddof=1) / math.sqrt(len(g)))


def sample_weights(ds: NCPDataset, loss: str = "weighted", class_balance: bool = True) -> np.ndarray:
    """Per-session loss weights (mean 1): ``weighted`` = |log(1+r_long) - log(1+r_short)|, what choosing the
    wrong side of the session costs in the objective (log-product), so the loss is the trading objective's
    cost-sensitive classification; ``class_balance`` gives both classes the same total weight."""
    n = len(ds)
    if n == 0:
        return np.zeros(0, "float32")
    if loss == "weighted":
        gl = np.log(np.maximum(1.0 + np.asarray(ds.long_return, float), 1e-9))
        gs = np.log(np.maximum(1.0 + np.asarray(ds.short_return, float), 1e-9))
        w = np.abs(gl - gs)
        w = w + 1e-3 * (w.mean() if w.mean() > 0 else 1.0)  # no session is worth exactly nothing
    elif loss == "bce":
        w = np.ones(n)
    else:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    if class_balance:
        y = np.asarray(ds.label) > 0
        if y.any() and (~y).any():
            half = 0.5 * w.sum()
            w = np.where(y, w * half / w[y].sum(), w * half / w[~y].sum())
    return (w / w.mean()).astype("float32")


class FoldTrainer:
    """One model re-used across folds: weights, optimizer state and input statistics are reset per fit.

    Training is a compiled custom loop: the train step is traced once per model (every batch has the
    same shape: the last one is filled with rows of zero weight), validation loss and predictions come
    from one compiled forward pass (:func:`predict_proba`), early stopping restores the best epoch.
    """

    def __init__(self, cfg: NCPConfig, epochs: int, batch_size: int, patience: int,
                 jit_compile: bool = False, loss: str = "bce", class_balance: bool = False) -> None:
        import tensorflow as tf
        self.cfg, self.epochs = cfg, int(epochs)
        self.loss, self.class_balance = loss, bool(class_balance)
        self.batch_size, self.patience = int(batch_size), int(patience)
        self.model = build_model(cfg)
        #: the skip solved as a logistic regression before the network trains (then frozen: the optimizer,
        #: its weight decay included, only sees the network's weights)
        self.skip_logistic = bool(cfg.skip) and cfg.skip_fit == "logistic"
        frozen = {id(v) for v in self.model.get_layer("skip_logit").trainable_variables} \
            if self.skip_logistic else set()
        self._vars = [v for v in self.model.trainable_variables if id(v) not in frozen]
        self.model.optimizer.build(self._vars)
        self._w0 = self.model.get_weights()
        self._opt0 = [v.numpy() for v in self.model.optimizer.variables]
        self.epochs_run = 0            #: epochs trained by all fits of this trainer
        self.train_seconds = 0.0       #: time spent in those epochs (compile included)
        model, opt, tvars = self.model, self.model.optimizer, self._vars

        def step(xd, xs, y, w):
            with tf.GradientTape() as tape:
                p = tf.reshape(model([xd, xs], training=True), [-1])
                p = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
                ll = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
                loss = tf.reduce_sum(ll * w) / tf.reduce_sum(w)
                if model.losses:  # the skip's L2 penalty
                    loss = loss + tf.add_n(model.losses)
            grads = tape.gradient(loss, tvars)
            opt.apply(grads, tvars)
            return loss

        # plain tensor code: no AutoGraph conversion (it can't read the closure and would warn)
        self._step = tf.function(tf.autograph.experimental.do_not_convert(step),
                                 jit_compile=bool(jit_compile), reduce_retracing=True)

    def _start_from_skip(self, train: NCPDataset, val: Optional[NCPDataset], sw: np.ndarray,
                         vw: Optional[np.ndarray]) -> tuple:
        """(validation loss, weights, per-session validation loss) to start early stopping from.

        With the logistic skip, the skip is solved first, to convergence; the network's output starts at
        zero, so the model is that logistic regression, and early stopping keeps it unless an epoch lowers
        the validation loss. Without it: (inf, None, None)."""
        self.skip_info: dict = {}
        if not self.skip_logistic:
            return math.inf, None, None
        has_val = val is not None and len(val) > 0
        self.skip_info = fit_skip_logistic(self.model, self.cfg, train.daily, train.seq, train.label, sw,
                                           (val.daily, val.seq, val.label, vw) if has_val else None)
        if not has_val:
            return math.inf, None, None
        p0 = predict_proba(self.model, val.daily, val.seq)
        best = _bce(val.label, p0, vw)
        self.history.history["val_loss_start"] = [best]
        return best, self.model.get_weights(), _session_bce(val.label, p0) * (1.0 if vw is None else vw)

    def _train_epoch(self, rng, xd: np.ndarray, xs: np.ndarray, y: np.ndarray, sw: np.ndarray,
                     pad: np.ndarray, bs: int) -> list:
        """One epoch of shuffled batches of size ``bs`` (the last one padded with weight 0); the batch losses."""
        n = len(y)
        nb = -(-n // bs)
        perm = rng.permutation(n)
        idx = np.concatenate([perm, perm[:nb * bs - n]])
        return [float(self._step(xd[j], xs[j], y[j], sw[j] * pad[b * bs:(b + 1) * bs]))
                for b, j in enumerate(np.split(idx, nb))]

    def fit(self, train: NCPDataset, val: Optional[NCPDataset] = None, verbose: int = 0):
        """Train from the initial weights on ``train`` (early stopping on the same weighted loss on
        ``val``, best epoch restored); ``verbose`` shows a progress bar of the epochs. Returns the model."""
        import keras
        keras.utils.set_random_seed(self.cfg.seed)  # each fit is reproducible, whatever ran before
        t0 = time.perf_counter()
        self.model.set_weights(self._w0)
        for v, x in zip(self.model.optimizer.variables, self._opt0):
            v.assign(x)
        set_input_stats(self.model, train.daily, train.seq)
        xd = np.nan_to_num(np.asarray(train.daily, "float32"))
        xs = np.nan_to_num(np.asarray(train.seq, "float32"))
        y = np.asarray(train.label, "float32")
        n = len(y)
        bs = max(1, min(self.batch_size, n))
        nb = -(-n // bs)
        rng = np.random.default_rng(self.cfg.seed)
        sw = sample_weights(train, self.loss, self.class_balance)
        vw = sample_weights(val, self.loss, self.class_balance) if val is not None and len(val) else None
        pad = np.ones(nb * bs, "float32")
        pad[n:] = 0.0
        self.history = _History()
        best, best_w, ll0 = self._start_from_skip(train, val, sw, vw)
        wait = 0
        kept = best   # validation loss of the weights kept (restored at the end)
        bar = None
        if verbose:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.epochs, desc=f"NCP training (seed {self.cfg.seed})", unit="epoch",
                       leave=False)
        for epoch in range(self.epochs):
            losses = self._train_epoch(rng, xd, xs, y, sw, pad, bs)
            self.history.history["loss"].append(float(np.mean(losses)))
            self.epochs_run += 1
            if val is not None and len(val):
                pv = predict_proba(self.model, val.daily, val.seq)
                vl = _bce(val.label, pv, vw)
                self.history.history["val_loss"].append(vl)
                if bar is not None:
                    bar.set_postfix(loss=f"{np.mean(losses):.4f}", val_loss=f"{vl:.4f}")
                    bar.update(1)
                if vl < best:
                    best, wait = vl, 0
                    # over the logistic skip, the network's epoch is kept only when it lowers the
                    # validation loss by residual_z standard errors of the per-session gain (paired)
                    if not self.skip_logistic or _significant_gain(
                            ll0 - _session_bce(val.label, pv) * (1.0 if vw is None else vw), self.cfg.residual_z):
                        kept, best_w = vl, self.model.get_weights()
                else:
                    wait += 1
                    if wait >= self.patience:
                        break
            elif bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if best_w is not None:
            self.model.set_weights(best_w)
        self.val_loss = kept   #: validation loss of the returned weights (inf without validation)
        self.train_seconds += time.perf_counter() - t0
        return self.model


def make_trainers(params: Dict[str, Any], n_daily: int, s: NCPSettings, seed: int = 0) -> list:
    """``s.seeds`` trainers of ``params`` (seeds ``seed, seed+1, ...``; their probabilities are averaged)."""
    return [FoldTrainer(config_from_params(params, n_daily, s, seed + k),
                        params.get("epochs", DEFAULT_PARAMS["epochs"]),
                        params.get("batch_size", DEFAULT_PARAMS["batch_size"]), s.patience,
                        jit_compile=use_jit(s.jit_compile), loss=s.loss, class_balance=s.class_balance)
            for k in range(int(s.seeds))]


class _Trainers:
    """Epoch and time totals of several trainers (what :func:`evaluate_params` reports)."""

    def __init__(self, trainers: list) -> None:
        self.trainers = trainers

    @property
    def epochs_run(self) -> int:
        return sum(t.epochs_run for t in self.trainers)

    @property
    def train_seconds(self) -> float:
        return sum(t.train_seconds for t in self.trainers)


def fold_predictions(params: Dict[str, Any], fold_data: list, s: NCPSettings, seed: int = 0,
                     report: Optional[Callable[[int, float], bool]] = None,
                     trainer: Optional[Any] = None) -> dict:
    """Train ``params`` on each fold (early stopping on its val; ``s.seeds`` seeds, probabilities
    averaged) and score its scored range.

    ``fold_data``: ``[(train, val, scored), ...]`` datasets (see :func:`fold_datasets`). Returns the
    per-fold objectives, probabilities and directions on the scored ranges and the trainer(s);
    ``report(step, mean so far)`` returning True stops (pruning) after that fold. ``trainer``: a
    :class:`FoldTrainer` or a list of them (default :func:`make_trainers`).
    """
    n_daily = fold_data[0][0].daily.shape[1]
    if trainer is None:
        trainer = make_trainers(params, n_daily, s, seed)
    trainers = trainer if isinstance(trainer, list) else [trainer]
    values, probs, dirs = [], [], []
    for k, (tr, va, sc) in enumerate(fold_data):
        p = np.mean([predict_proba(t.fit(tr, va), sc.daily, sc.seq) for t in trainers], axis=0)
        d = directions(p, s.threshold)
        probs.append(p)
        dirs.append(d)
        values.append(performance(d, sc, s.objective)["objective"])
        if report is not None and report(k, float(np.mean(values))):
            break
    return {"values": values, "probs": probs, "directions": dirs, "trainer": _Trainers(trainers),
            "complete": len(values) == len(fold_data)}
