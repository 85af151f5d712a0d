"""Keras 3 on TensorFlow vs Keras 3 on JAX for the two learners: the DQN update and the NCP (LTC, CfC) training step.

Each leg runs in a fresh process with ``KERAS_BACKEND`` set (one backend per
process) and one compute thread (TensorFlow's intra/inter-op pools = 1; XLA's
CPU client without its Eigen thread pool), the fair setting on a shared 2-core
machine. Rounds alternate TF, JAX, TF, JAX, ... and each figure is the best
round, so a change of load hits both backends alike. Prints what ran, what
failed and why, per-step times, the ratios, and whether both backends compute
the same numbers from the same weights (first-step loss, forward pass).

* DQN update, dense Q-network (hidden 64/32, dueling head, double DQN, Huber,
  Adam), batch 32: on TF the project's own compiled step
  (``DQNAgent.compile()``'s ``tf.function``); on JAX the same update written
  with ``model.stateless_call`` and ``optimizer.stateless_apply`` under
  ``jax.jit``. Also Keras' own compiled ``train_on_batch`` on both backends.
* NCP: ``mltrade.models.ncp.model.build_model`` (two stacked ``ncps`` 1.0.1
  LTC or CfC layers with AutoNCP wiring, dense branch, Adam, binary
  cross-entropy), Keras ``train_on_batch`` steps at batch 64 on both backends; and the step the
  project trains with (``FoldTrainer``'s ``tf.function``) beside the same update under ``jax.jit``.

JAX is not a dependency of mltrade: ``pip install jax`` to run the JAX legs
(without it they print that JAX is missing). Run:
python benchmarks/bench_keras_backend.py [--rounds 3] [--steps 300] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
N_OBS, N_ACTIONS = 44, 19   #: the DQN environment's observation width and actions (original observations, day mode)


def _threads_env(backend: str, threads: int) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(HERE), env.get("PYTHONPATH", "")) if p)
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            f"intra_op_parallelism_threads={threads}").strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


def run_leg(backend: str, task: str, args, shared: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--leg", task, "--steps", str(args.steps),
           "--threads", str(args.threads), "--shared", shared]
    p = subprocess.run(cmd, env=_threads_env(backend, args.threads), capture_output=True, text=True,
                       timeout=1800)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"ok": False, "error": f"exit {p.returncode}: {tail[:300]}"}
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------- legs (one backend per process)
def _configure(threads: int) -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        return f"tensorflow {tf.__version__}, keras {keras.__version__}"
    import jax
    return f"jax {jax.__version__} ({jax.devices()[0].platform}), keras {keras.__version__}"


def _batches(n_obs: int, nb: int, k: int = 16, batch: int = 32):
    import numpy as np
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(batch, 1, n_obs)).astype("float32"), rng.integers(0, nb, batch).astype("int32"),
             rng.normal(size=batch).astype("float32"), rng.normal(size=(batch, 1, n_obs)).astype("float32"),
             (rng.random(batch) < 0.05).astype("float32")) for _ in range(k)]


def _dqn_agent(n_obs: int, nb: int):
    from mltrade.models.dqn.agent import DQNAgent, build_q_network
    from mltrade.models.dqn.memory import SequentialMemory
    import keras

    keras.utils.set_random_seed(0)
    m = build_q_network((n_obs,), nb, (64, 32), seed=0)
    return DQNAgent(m, nb, SequentialMemory(1000, 1), nb_steps_warmup=32, target_model_update=10000,
                    delta_clip=1.0, enable_double_dqn=True, enable_dueling_network=True, seed=0)


def leg_dqn(steps: int, shared: str) -> dict:
    import keras
    import numpy as np

    n_obs, nb = N_OBS, N_ACTIONS
    agent = _dqn_agent(n_obs, nb)
    weights = os.path.join(shared, "dqn_weights.npz")
    if keras.backend.backend() == "tensorflow":
        np.savez(weights, *agent.model.get_weights())
    else:
        with np.load(weights) as z:
            agent.model.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])
    data = _batches(n_obs, nb)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        agent.compile()
        agent.target_model.set_weights(agent.model.get_weights())

        def step(b):
            loss, _ = agent._train_step(*(tf.constant(x) for x in b))
            return float(loss)
    else:
        step = _jax_dqn_step(agent)
    first = step(data[0])
    for i in range(30):
        step(data[i % len(data)])
    t = time.perf_counter()
    for i in range(steps):
        step(data[i % len(data)])
    per = (time.perf_counter() - t) / steps
    return {"ok": True, "first_loss": first, "ms_per_step": per * 1000}


def _jax_dqn_step(agent):
    import jax
    import jax.numpy as jnp
    import keras

    model = agent.model
    target = keras.models.clone_model(model)
    target.set_weights(model.get_weights())
    opt = keras.optimizers.Adam(learning_rate=2.5e-4)
    opt.build(model.trainable_variables)
    gamma = agent.gamma
    state = {"tv": [v.value for v in model.trainable_variables],
             "ntv": [v.value for v in model.non_trainable_variables],
             "ov": [v.value for v in opt.variables],
             "ttv": [v.value for v in target.trainable_variables],
             "tntv": [v.value for v in target.non_trainable_variables]}

    def loss_fn(tv, ntv, ttv, tntv, s0, a, r, s1, term):
        q1_t, _ = target.stateless_call(ttv, tntv, s1, training=False)
        q1_on, _ = model.stateless_call(tv, ntv, s1, training=False)
        best = jnp.argmax(q1_on, axis=1)
        q1 = jnp.take_along_axis(q1_t, best[:, None], axis=1)[:, 0]
        y = jax.lax.stop_gradient(r + gamma * (1.0 - term) * q1)
        q0, ntv2 = model.stateless_call(tv, ntv, s0, training=True)
        qa = jnp.take_along_axis(q0, a[:, None], axis=1)[:, 0]
        err = y - qa
        ab = jnp.abs(err)
        loss = jnp.mean(jnp.where(ab < 1.0, 0.5 * err ** 2, ab - 0.5))
        return loss, ntv2

    @jax.jit
    def update(tv, ntv, ov, ttv, tntv, s0, a, r, s1, term):
        (loss, ntv2), g = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, ttv, tntv, s0, a, r, s1, term)
        tv2, ov2 = opt.stateless_apply(ov, g, tv)
        return loss, tv2, ntv2, ov2

    def step(b):
        loss, state["tv"], state["ntv"], state["ov"] = update(state["tv"], state["ntv"], state["ov"],
                                                              state["ttv"], state["tntv"], *b)
        return float(loss)
    return step


def leg_keras_q(steps: int, shared: str) -> dict:
    """Keras' own compiled train step (``train_on_batch``) on the dueling Q-network: regression to targets."""
    import keras
    import numpy as np

    agent = _dqn_agent(N_OBS, N_ACTIONS)
    m = agent.model
    m.compile(optimizer=keras.optimizers.Adam(2.5e-4), loss=keras.losses.Huber(1.0))
    rng = np.random.default_rng(1)
    data = [(rng.normal(size=(32, 1, N_OBS)).astype("float32"), rng.normal(size=(32, N_ACTIONS)).astype("float32"))
            for _ in range(16)]
    for i in range(30):
        m.train_on_batch(*data[i % 16])
    t = time.perf_counter()
    for i in range(steps):
        m.train_on_batch(*data[i % 16])
    return {"ok": True, "ms_per_step": (time.perf_counter() - t) / steps * 1000}


def leg_ncp(cell: str, steps: int, shared: str) -> dict:
    import keras
    import numpy as np

    from mltrade.models.ncp.model import NCPConfig, build_model

    rng = np.random.default_rng(0)
    n = 64
    d = rng.normal(size=(n * 8, 32)).astype("float32")
    s = rng.normal(0, 0.01, (n * 8, 17, 6)).astype("float32")
    y = (rng.random(n * 8) > 0.5).astype("float32")
    model = build_model(NCPConfig(n_daily=32, cell=cell), d, s)
    weights = os.path.join(shared, f"ncp_{cell}.npz")
    if keras.backend.backend() == "tensorflow":
        np.savez(weights, *model.get_weights())
    else:
        with np.load(weights) as z:
            model.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])
    probe = model.predict_on_batch([d[:n], s[:n]]).reshape(-1)
    first = float(model.test_on_batch([d[:n], s[:n]], y[:n]))
    for i in range(5):
        model.train_on_batch([d[i * n:(i + 1) * n], s[i * n:(i + 1) * n]], y[i * n:(i + 1) * n])
    t = time.perf_counter()
    for i in range(steps):
        k = i % 8
        model.train_on_batch([d[k * n:(k + 1) * n], s[k * n:(k + 1) * n]], y[k * n:(k + 1) * n])
    per = (time.perf_counter() - t) / steps
    return {"ok": True, "ms_per_step": per * 1000, "first_loss": first, "probe": probe[:8].tolist()}


def leg_ncp_step(cell: str, steps: int, shared: str) -> dict:
    """The training step the project runs: ``FoldTrainer``'s ``tf.function`` on TF; the same weighted
    cross-entropy and Adam update as a ``jax.jit`` stateless step on JAX (batch 64)."""
    import keras
    import numpy as np

    from mltrade.models.ncp.model import NCPConfig, build_model

    rng = np.random.default_rng(0)
    n = 64
    d = rng.normal(size=(n * 8, 32)).astype("float32")
    s = rng.normal(0, 0.01, (n * 8, 17, 6)).astype("float32")
    y = (rng.random(n * 8) > 0.5).astype("float32")
    w = np.ones(n, "float32")
    cfg = NCPConfig(n_daily=32, cell=cell)
    weights = os.path.join(shared, f"ncp_{cell}.npz")
    if keras.backend.backend() == "tensorflow":
        from mltrade.models.ncp.fit import FoldTrainer

        trainer = FoldTrainer(cfg, epochs=1, batch_size=n, patience=1)
        model = trainer.model
        with np.load(weights) as z:
            model.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])

        def step(k):
            return float(trainer._step(d[k * n:(k + 1) * n], s[k * n:(k + 1) * n], y[k * n:(k + 1) * n], w))
    else:
        model = build_model(cfg)
        with np.load(weights) as z:
            model.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])
        step = _jax_ncp_step(model, d, s, y, w, n)
    first = step(0)
    for i in range(3):
        step(i % 8)
    t = time.perf_counter()
    for i in range(steps):
        step(i % 8)
    # no first-loss check here: it is a training-mode loss, and dropout draws its masks from each backend's own
    # random stream (the inference-mode checks of the train_on_batch legs compare the numbers)
    del first
    return {"ok": True, "ms_per_step": (time.perf_counter() - t) / steps * 1000}


def _jax_ncp_step(model, d, s, y, w, n):
    import jax
    import jax.numpy as jnp

    opt = model.optimizer
    opt.build(model.trainable_variables)
    state = {"tv": [v.value for v in model.trainable_variables],
             "ntv": [v.value for v in model.non_trainable_variables],
             "ov": [v.value for v in opt.variables]}

    def loss_fn(tv, ntv, xd, xs, yy, ww):
        p, ntv2 = model.stateless_call(tv, ntv, [xd, xs], training=True)
        p = jnp.clip(jnp.reshape(p, (-1,)), 1e-7, 1 - 1e-7)
        ll = -(yy * jnp.log(p) + (1 - yy) * jnp.log(1 - p))
        return jnp.sum(ll * ww) / jnp.sum(ww), ntv2

    @jax.jit
    def update(tv, ntv, ov, xd, xs, yy, ww):
        (loss, ntv2), g = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, xd, xs, yy, ww)
        tv2, ov2 = opt.stateless_apply(ov, g, tv)
        return loss, tv2, ntv2, ov2

    def step(k):
        loss, state["tv"], state["ntv"], state["ov"] = update(
            state["tv"], state["ntv"], state["ov"], d[k * n:(k + 1) * n], s[k * n:(k + 1) * n],
            y[k * n:(k + 1) * n], w)
        return float(loss)
    return step


def leg(task: str, steps: int, threads: int, shared: str) -> None:
    try:
        where = _configure(threads)
        if task == "dqn":
            out = leg_dqn(steps, shared)
        elif task == "keras_q":
            out = leg_keras_q(steps, shared)
        elif task.startswith("step_"):
            out = leg_ncp_step(task.split("_", 1)[1], max(steps // 10, 10), shared)
        else:
            out = leg_ncp(task.split("_", 1)[1], max(steps // 10, 10), shared)
        out["where"] = where
    except Exception as exc:  # reported by the parent as what failed and why
        out = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    print("RESULT " + json.dumps(out))


# ----------------------------------------------------------------------------- the comparison
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300, help="DQN update steps per round (NCP: a tenth)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--leg", default="")
    ap.add_argument("--shared", default="")
    args = ap.parse_args()
    if args.leg:
        leg(args.leg, args.steps, args.threads, args.shared)
        return
    try:
        import jax
        has_jax = f"jax {jax.__version__}"
    except ImportError:
        has_jax = ""
    print(f"device: CPU ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}); {args.threads} compute "
          f"thread(s) per backend; {args.rounds} interleaved rounds, best round reported")
    if not has_jax:
        print("JAX is not installed (pip install jax): only the TensorFlow legs run")
    tasks = [("dqn", "DQN update (project step on TF, jax.jit stateless step on JAX), batch 32"),
             ("keras_q", "Keras train_on_batch, dueling Q-network, batch 32"),
             ("ncp_ltc", "NCP LTC (ncps 1.0.1) Keras train_on_batch, batch 64"),
             ("ncp_cfc", "NCP CfC (ncps 1.0.1) Keras train_on_batch, batch 64"),
             ("step_ltc", "NCP LTC compiled step (FoldTrainer's on TF, jax.jit on JAX)"),
             ("step_cfc", "NCP CfC compiled step (FoldTrainer's on TF, jax.jit on JAX)")]
    backends = ["tensorflow"] + (["jax"] if has_jax else [])
    with tempfile.TemporaryDirectory() as shared:
        results = {(t, b): [] for t, _ in tasks for b in backends}
        for r in range(args.rounds):
            for t, _ in tasks:
                for b in backends:
                    results[(t, b)].append(run_leg(b, t, args, shared))
    print(f"\n{'what':62s} {'TensorFlow':>14s} {'JAX':>14s} {'TF / JAX':>9s}  same numbers")
    for t, label in tasks:
        cells, best = [], {}
        for b in backends:
            ok = [x for x in results[(t, b)] if x.get("ok")]
            if ok:
                best[b] = min(x["ms_per_step"] for x in ok)
                cells.append(f"{best[b]:9.2f} ms")
            else:
                cells.append("failed")
        while len(cells) < 2:
            cells.append("not run")
        ratio = f"{best['tensorflow'] / best['jax']:8.2f}x" if len(best) == 2 else "      n/a"
        same = "n/a"
        if len(best) == 2:
            a = next(x for x in results[(t, "tensorflow")] if x.get("ok"))
            j = next(x for x in results[(t, "jax")] if x.get("ok"))
            checks = []
            if "first_loss" in a:
                checks.append(f"first loss {a['first_loss']:.6f} vs {j['first_loss']:.6f}")
            if "probe" in a:
                diff = max(abs(p - q) for p, q in zip(a["probe"], j["probe"]))
                checks.append(f"forward pass max |diff| {diff:.1e}")
            same = "; ".join(checks) or "n/a"
        print(f"{label:62s} {cells[0]:>14s} {cells[1]:>14s} {ratio}  {same}")
        for b in backends:
            for x in results[(t, b)]:
                if not x.get("ok"):
                    print(f"    {b}: {x['error']}")
                    break
    wheres = {b: next((x["where"] for t, _ in tasks for x in results[(t, b)] if x.get("ok")), "-")
              for b in backends}
    print("ran on: " + "; ".join(f"{b}: {w}" for b, w in wheres.items()))


if __name__ == "__main__":
    main()
