"""Dual-branch Keras 3 model: dense layers over daily features, stacked LTC/CfC (NCP wiring) over candles.

Output: probability that a long certificate bought after the session's first N
candles ends the session above its entry price: ``sigmoid(network logit + linear skip logit)``, where the
skip is a linear map of the standardised daily features and candles (among them the move from the open to
the decision, the intraday momentum), so the model starts as a logistic regression on its own inputs. Inputs are standardised by
``Normalization`` layers inside the model (adapted on training data only), so a
saved ``.keras`` file is self-contained.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

CELLS = ("ltc", "cfc")
SKIP_FITS = ("logistic", "joint")
#: the logistic skip's C grid: the learner ladder's (mltrade.models.ladder.LOGISTIC_C)
SKIP_C = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass
class NCPConfig:
    """Architecture and optimiser hyper-parameters of :func:`build_model`."""

    n_daily: int = 32                       #: number of daily features (dense branch input width)
    n_candles: int = 17                     #: candles before the decision (sequence length)
    n_seq_features: int = 6                 #: values per candle
    cell: str = "ltc"                       #: "ltc" (liquid time-constant) or "cfc" (closed-form)
    dense_units: Sequence[int] = (32, 16)   #: dense branch block widths
    dense_dropout: float = 0.2
    dense_slope: float = 0.1                #: LeakyReLU negative slope in the dense branch
    ltc_units: int = 16                     #: first recurrent layer: AutoNCP(ltc_units, ltc_units-3)
    ltc_units2: int = 8                     #: second recurrent layer: AutoNCP(ltc_units2, ltc_units2-3)
    branch_head: int = 4                    #: width of each branch's sigmoid head
    head_units: int = 8                     #: the dense block after concatenation
    head_dropout: float = 0.1
    head_slope: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 0.0               #: AdamW decoupled weight decay (0 = plain Adam)
    #: a linear path from the standardised daily features and the candles straight to the output
    #: logit (zero-initialised, like the network's own output layer): the model starts as a logistic
    #: regression on its inputs and the network learns what the linear path leaves
    skip: bool = True
    #: how the skip is fitted: "logistic" = solved first, to convergence, as an L2 logistic regression on the
    #: training sessions (the ladder's standardisation and C grid, C chosen by the loss on the fit's
    #: early-stopping sessions), then frozen while the network learns the residual (its output starts at
    #: zero, and early stopping can keep it there, so the model is at least that logistic regression);
    #: "joint" = zero-initialised and trained with the network by gradient descent (skip_l2 penalty)
    skip_fit: str = "logistic"
    #: with the logistic skip, an epoch of the network is kept (early stopping) only when it lowers the
    #: validation loss below the logistic's by residual_z standard errors of the per-session gain (paired,
    #: one-sided): a gain of a few 1e-4 in log-loss on ~120 sessions is noise, and it flips decisions
    residual_z: float = 2.0
    skip_l2: float = 0.03                   #: L2 penalty on the skip's weights (per-session mean loss; "joint",
    #: and the logistic's C = 1 / (2 skip_l2 n) when a fit has no early-stopping sessions)
    ode_unfolds: int = 3                    #: LTC solver steps per candle (ncps' default 6; 3 is ~2x faster)
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell: expected one of {CELLS}, got {self.cell!r}")
        if self.skip_fit not in SKIP_FITS:
            raise ValueError(f"skip_fit: expected one of {SKIP_FITS}, got {self.skip_fit!r}")
        for name in ("ltc_units", "ltc_units2"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 5:
                raise ValueError(f"{name}: expected an integer >= 5 (AutoNCP(units, units-3)), got {v!r}")
        for name in ("dense_dropout", "head_dropout"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{name}: expected a fraction in [0, 1), got {v!r}")
        if self.n_daily < 1 or self.n_candles < 1 or self.n_seq_features < 1:
            raise ValueError("n_daily/n_candles/n_seq_features: expected positive integers")
        if not list(self.dense_units) or any(int(u) < 1 for u in self.dense_units):
            raise ValueError(f"dense_units: expected positive widths, got {self.dense_units!r}")
        self.dense_units = tuple(int(u) for u in self.dense_units)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dense_units"] = list(self.dense_units)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NCPConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"NCPConfig: unknown keys {unknown}; valid: {sorted(known)}")
        return cls(**d)


def _standardize_class():
    import keras

    @keras.utils.register_keras_serializable(package="mltrade_ncp", name="Standardize")
    class Standardize(keras.layers.Layer):
        """``(x - mean) / std`` over the last axis; statistics are non-trainable weights set from data."""

        def build(self, input_shape):
            n = int(input_shape[-1])
            self.mean = self.add_weight(name="mean", shape=(n,), initializer="zeros", trainable=False)
            self.std = self.add_weight(name="std", shape=(n,), initializer="ones", trainable=False)

        def call(self, x):
            return (x - self.mean) / self.std

        def set_stats(self, sample: np.ndarray) -> None:
            x = np.nan_to_num(np.asarray(sample, "float32"))
            x = x.reshape(-1, x.shape[-1])
            sd = x.std(axis=0)
            self.mean.assign(x.mean(axis=0))
            self.std.assign(np.where(sd > 1e-8, sd, 1.0).astype("float32"))

    return Standardize


_STANDARDIZE = None


def standardize_layer_class():
    """The registered ``Standardize`` layer class (created on first use, after Keras is imported)."""
    global _STANDARDIZE
    if _STANDARDIZE is None:
        _STANDARDIZE = _standardize_class()
    return _STANDARDIZE


def set_input_stats(model, daily_sample: np.ndarray, seq_sample: np.ndarray) -> None:
    """Set the input standardisation of a built model from (training) samples."""
    model.get_layer("daily_norm").set_stats(daily_sample)
    model.get_layer("candles_norm").set_stats(seq_sample)


def _recurrent(cell: str, units: int, return_sequences: bool, name: str, seed: int, ode_unfolds: int = 6):
    from ncps.keras import CfC, LTC
    from ncps.wirings import AutoNCP
    wiring = AutoNCP(int(units), int(units) - 3, seed=seed)
    if cell == "ltc":
        return LTC(wiring, return_sequences=return_sequences, name=name, ode_unfolds=int(ode_unfolds))
    return CfC(wiring, return_sequences=return_sequences, name=name)


def _block(x, units: int, slope: float, dropout: float, name: str):
    import keras
    x = keras.layers.Dense(units, name=f"{name}_dense")(x)
    x = keras.layers.LeakyReLU(negative_slope=slope, name=f"{name}_lrelu")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_drop")(x)
    return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def build_model(cfg: NCPConfig, daily_sample: Optional[np.ndarray] = None,
                seq_sample: Optional[np.ndarray] = None):
    """Compile the dual-branch model; ``*_sample`` (training inputs) adapt the input normalisation."""
    import keras
    keras.utils.set_random_seed(cfg.seed)
    daily_in = keras.Input(shape=(cfg.n_daily,), name="daily")
    seq_in = keras.Input(shape=(cfg.n_candles, cfg.n_seq_features), name="candles")

    Standardize = standardize_layer_class()
    dnorm = Standardize(name="daily_norm")
    snorm = Standardize(name="candles_norm")
    x = daily_norm_out = dnorm(daily_in)
    for i, u in enumerate(cfg.dense_units):
        x = _block(x, u, cfg.dense_slope, cfg.dense_dropout, f"daily{i}")
    x = keras.layers.Dense(cfg.branch_head, activation="sigmoid", name="daily_head")(x)

    s = snorm_out = snorm(seq_in)
    s = _recurrent(cfg.cell, cfg.ltc_units, True, "rnn1", cfg.seed, cfg.ode_unfolds)(s)
    s = _recurrent(cfg.cell, cfg.ltc_units2, False, "rnn2", cfg.seed + 1, cfg.ode_unfolds)(s)
    s = keras.layers.Dense(cfg.branch_head, activation="sigmoid", name="candles_head")(s)

    h = keras.layers.Concatenate(name="concat")([x, s])
    h = _block(h, cfg.head_units, cfg.head_slope, cfg.head_dropout, "head")
    if cfg.skip:
        logit = keras.layers.Dense(1, kernel_initializer="zeros", name="head_logit")(h)
        candles = keras.layers.Flatten(name="candles_flat")(snorm_out)
        lin = keras.layers.Concatenate(name="skip_inputs")([daily_norm_out, candles])
        reg = keras.regularizers.L2(cfg.skip_l2) if cfg.skip_l2 > 0 and cfg.skip_fit == "joint" else None
        lin = keras.layers.Dense(1, kernel_initializer="zeros", kernel_regularizer=reg, name="skip_logit")(lin)
        out = keras.layers.Activation("sigmoid", name="p_long")(keras.layers.Add(name="logit")([logit, lin]))
    else:
        out = keras.layers.Dense(1, activation="sigmoid", name="p_long")(h)
    model = keras.Model([daily_in, seq_in], out, name=f"ncp_{cfg.cell}_s{cfg.seed}")
    if daily_sample is not None:
        dnorm.set_stats(daily_sample)
    if seq_sample is not None:
        snorm.set_stats(seq_sample)
    opt = (keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay) if cfg.weight_decay > 0
           else keras.optimizers.Adam(cfg.learning_rate))
    model.compile(optimizer=opt, loss="binary_crossentropy")
    return model


def skip_inputs(daily: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """The skip's raw inputs, one row per session: the daily features, then the candles flattened
    (candle by candle; the order of the model's ``skip_inputs`` and of the ladder's ``ladder_inputs``)."""
    d = np.nan_to_num(np.asarray(daily, "float64"))
    s = np.nan_to_num(np.asarray(seq, "float64"))
    return np.concatenate([d, s.reshape(len(s), -1)], axis=1)


def _logloss(y: np.ndarray, p: np.ndarray, w: Optional[np.ndarray]) -> float:
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    ll = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(ll.mean() if w is None else (ll * w).sum() / max(float(np.sum(w)), 1e-12))


def fit_skip_logistic(model, cfg: NCPConfig, daily: np.ndarray, seq: np.ndarray, y: np.ndarray,
                      w: Optional[np.ndarray] = None, val: Optional[tuple] = None,
                      cs: Sequence[float] = SKIP_C) -> dict:
    """Solve the skip as an L2 logistic regression (scikit-learn, ``StandardScaler`` then
    ``LogisticRegression``: the ladder's logistic) on the training sessions and write it into the model's
    ``skip_logit`` layer, exactly (its weights are mapped from the scaler's space into the space of the
    model's own input standardisation, which must be set first). ``val`` = ``(daily, seq, y, w)``: the
    early-stopping sessions, whose (weighted) log-loss chooses C in ``cs``; without them C is
    ``1 / (2 skip_l2 n)``, the joint skip's penalty. ``w``: per-session loss weights (the training loss's).
    Returns ``{"C": ..., "val_loss": ...}`` (``C`` None: one class in the training sessions, skip left as it
    is)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    X = skip_inputs(daily, seq)
    y = (np.asarray(y) > 0).astype(int)
    if len(np.unique(y)) < 2:
        # one class: no logistic regression to fit; the skip stays as it is (zero) and the network alone
        # learns the constant
        return {"C": None, "val_loss": None}
    sc = StandardScaler().fit(X)
    Z = sc.transform(X)
    kw = {} if w is None else {"sample_weight": np.asarray(w, float)}
    if val is not None and len(val[2]):
        Zv, yv = sc.transform(skip_inputs(val[0], val[1])), (np.asarray(val[2]) > 0).astype(int)
        best = None
        for c in cs:
            m = LogisticRegression(C=float(c), max_iter=2000).fit(Z, y, **kw)
            vl = _logloss(yv, m.predict_proba(Zv)[:, 1], val[3])
            if best is None or vl < best[0] - 1e-12:
                best = (vl, float(c), m)
        vl, C, m = best
    else:
        C = 1.0 / (2.0 * max(cfg.skip_l2, 1e-12) * len(y))
        m, vl = LogisticRegression(C=C, max_iter=2000).fit(Z, y, **kw), None
    coef, b = m.coef_.reshape(-1).astype(float), float(m.intercept_[0])
    # the model's skip sees z = (x - mean) / std per column (its Standardize layers); the scaler's u =
    # (x - mu) / sd: w.u + b = (w std / sd).z + b + w.(mean - mu) / sd
    dn, sn = model.get_layer("daily_norm"), model.get_layer("candles_norm")
    mean = np.concatenate([np.asarray(dn.mean), np.tile(np.asarray(sn.mean), cfg.n_candles)]).astype(float)
    std = np.concatenate([np.asarray(dn.std), np.tile(np.asarray(sn.std), cfg.n_candles)]).astype(float)
    coef = coef / sc.scale_
    kernel = coef * std
    bias = b + float(np.dot(coef, mean - sc.mean_))
    model.get_layer("skip_logit").set_weights([kernel.reshape(-1, 1).astype("float32"),
                                               np.array([bias], "float32")])
    return {"C": C, "val_loss": vl}


def average_models(models: Sequence[Any]):
    """One model whose output is the mean probability of ``models`` (same inputs; seeds averaged). A single
    model is returned as it is."""
    import keras
    models = list(models)
    if len(models) == 1:
        return models[0]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"average_models: the models need distinct names (different seeds), got {names}")
    d = keras.Input(shape=tuple(models[0].inputs[0].shape[1:]), name="daily")
    s = keras.Input(shape=tuple(models[0].inputs[1].shape[1:]), name="candles")
    out = keras.layers.Average(name="p_long_mean")([m([d, s]) for m in models])
    return keras.Model([d, s], out, name=f"ncp_mean_of_{len(models)}")


def custom_objects() -> dict:
    """Objects needed to load a saved model (the ncps layers and wirings)."""
    from ncps.keras import CfC, LTC
    from ncps.wirings import AutoNCP
    return {"LTC": LTC, "CfC": CfC, "AutoNCP": AutoNCP, "Standardize": standardize_layer_class()}


def save_model(model: Any, path: str) -> str:
    """Save as ``.keras`` atomically (temp file + ``os.replace``); returns the path."""
    if not str(path).endswith(".keras"):
        raise ValueError(f"path: expected a file name ending in .keras, got {path!r}")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    model.save(tmp)
    os.replace(tmp, path)
    return str(path)


def load_model(path: str):
    """Load a ``.keras`` model saved by :func:`save_model`."""
    import keras
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: NCP model file not found (train one with `mltrade train ncp`)")
    return keras.models.load_model(path, custom_objects=custom_objects(), compile=False)


_FORWARD: "weakref.WeakKeyDictionary" = None  # model -> compiled forward pass


def _forward(model: Any):
    """A ``tf.function`` forward pass of ``model``, traced once for any batch size (eager RNNs are slow)."""
    global _FORWARD
    import weakref
    import tensorflow as tf
    if _FORWARD is None:
        _FORWARD = weakref.WeakKeyDictionary()
    fn = _FORWARD.get(model)
    if fn is None:
        sig = [tf.TensorSpec((None,) + tuple(x.shape[1:]), tf.float32) for x in model.inputs]
        fn = tf.function(lambda d, s: model([d, s], training=False), input_signature=sig)
        _FORWARD[model] = fn
    return fn


def predict_proba(model: Any, daily: np.ndarray, seq: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Probabilities for a batch (one compiled forward pass per ``batch_size`` rows, no Keras callbacks)."""
    daily = np.nan_to_num(np.asarray(daily, "float32"))
    seq = np.nan_to_num(np.asarray(seq, "float32"))
    if len(daily) != len(seq):
        raise ValueError(f"daily/seq: expected the same number of rows, got {len(daily)} and {len(seq)}")
    if len(daily) == 0:
        return np.zeros(0)
    fn = _forward(model)
    outs = []
    for i in range(0, len(daily), batch_size):
        outs.append(np.asarray(fn(daily[i:i + batch_size], seq[i:i + batch_size])))
    return np.concatenate(outs).reshape(-1).astype(float)
