"""DQN benchmark: environment steps/s, learning steps/s, one-batch vs per-bar ensemble inference.

Run: python benchmarks/bench_dqn.py [--agents 10] [--years 5] [--learn-steps 20000] [--n-envs 16]
Prints figures and ratios measured in this process (same machine, same data), and the device.
Learning throughput: today's one-environment ``DQNAgent.fit`` beside the vectorised ``fit_vector``
(same agent parameters, ``train_interval=4``, batch 32), and stable-baselines3's DQN on the same
gymnasium environment when it is installed (``pip install -e .[bench]``; never a runtime dependency), on the
CPU with torch on one thread and on torch's default thread count, each printed; the ratios use SB3's best.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--years", type=int, default=5)
    ap.add_argument("--env-steps", type=int, default=20000)
    ap.add_argument("--train-steps", type=int, default=2000)
    ap.add_argument("--learn-steps", type=int, default=20000)
    ap.add_argument("--n-envs", type=int, default=16)
    ap.add_argument("--sb3-leg", type=int, default=-1, help=argparse.SUPPRESS)
    ap.add_argument("--sb3-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sb3_leg >= 0:
        sb3_leg(args.sb3_leg, args.years, args.sb3_steps)
        return

    import keras

    from mltrade.models.dqn.vector import training_device

    print(f"device: {training_device()}")

    from mltrade.feeds.sample import load_daily
    from mltrade.models.dqn.agent import DQNAgent, build_q_network
    from mltrade.models.dqn.ensemble import Ensemble, Scaler
    from mltrade.models.dqn.env import KnockoutEnv
    from mltrade.models.dqn.memory import SequentialMemory
    from mltrade.models.dqn.observations import original_observations
    from mltrade.models.dqn.policy import BoltzmannQPolicy, LinearAnnealedPolicy

    daily = load_daily("2014-01-01", None).iloc[-252 * args.years:]
    obs = original_observations(daily)
    print(f"data: {len(daily)} daily sessions {daily.index[0].date()} .. {daily.index[-1].date()}")

    t = time.perf_counter()
    env = KnockoutEnv(obs, daily, mode="day")
    build = time.perf_counter() - t
    rng = np.random.default_rng(0)
    acts = rng.integers(0, env.nb_actions, args.env_steps)
    env.reset(seed=0)
    t = time.perf_counter()
    for a in acts:
        _, _, done, _, _ = env.step(int(a))
        if done:
            env.reset()
    env_sps = args.env_steps / (time.perf_counter() - t)
    print(f"environment: outcome table for {len(env.obs)} sessions x {env.nb_actions} actions built in "
          f"{build:.2f} s; {env_sps:,.0f} steps/s")

    def agent(seed: int, warmup: int) -> DQNAgent:
        keras.utils.set_random_seed(seed)
        m = build_q_network(env.observation_space.shape, env.nb_actions, (64, 32), seed=seed)
        ag = DQNAgent(m, env.nb_actions, SequentialMemory(50000, 1),
                      policy=LinearAnnealedPolicy(BoltzmannQPolicy(), "tau", 1.0, 0.05, 0.05, 1000),
                      nb_steps_warmup=warmup, train_interval=1, target_model_update=10000, delta_clip=1.0,
                      enable_double_dqn=True, enable_dueling_network=True, seed=seed)
        ag.compile()
        return ag

    n = args.train_steps
    ag = agent(0, n + 1)                   # acting only (never trains)
    ag.fit(env, 200)
    t = time.perf_counter()
    ag.fit(env, n)
    act_sps = n / (time.perf_counter() - t)
    ag = agent(1, 32)
    ag.fit(env, 200)                       # trace the train step
    t = time.perf_counter()
    ag.fit(env, n)
    train_sps = n / (time.perf_counter() - t)
    print(f"agent: acting only {act_sps:,.0f} steps/s; acting + one gradient step per env step "
          f"(train_interval=1, batch 32) {train_sps:,.0f} steps/s; with train_interval=4 expect about "
          f"{1 / (1 / act_sps + 0.25 * (1 / train_sps - 1 / act_sps)):,.0f} steps/s")

    learning(args, env, agent)

    agents = [agent(100 + i, 10) for i in range(args.agents)]
    cols = list(obs.columns)
    x = obs.dropna()
    ens = Ensemble("day", agents, [], Scaler.fit(x.to_numpy(float)), cols)
    ens.q_values(x.iloc[:5])
    ens.q_values_per_row(x.iloc[:5])                  # warm both paths
    t = time.perf_counter()
    qb = ens.q_values(x)
    batch_s = time.perf_counter() - t
    t = time.perf_counter()
    qr = ens.q_values_per_row(x)
    row_s = time.perf_counter() - t
    assert np.allclose(qb, qr, atol=1e-5)
    print(f"inference, {args.agents} agents x {len(x)} sessions: one batch per agent "
          f"{batch_s * 1000:.1f} ms, "
          f"per bar {row_s * 1000:.0f} ms; per-bar / batch = {row_s / batch_s:.0f}x")


def learning(args, env, make_agent) -> None:
    """Environment steps/s per agent with learning (train_interval=4): fit vs fit_vector vs SB3."""
    from mltrade.models.dqn.vector import fit_vector

    n = args.learn_steps
    env.random_start, env.episode_length = True, 250

    def tuned(seed):
        ag = make_agent(seed, 100)
        ag.train_interval = 4
        return ag

    ag = tuned(2)
    ag.fit(env, 300)                                   # trace
    m = max(n // 5, 2000)
    t = time.perf_counter()
    ag.fit(env, m)
    seq = m / (time.perf_counter() - t)
    print(f"learning, one agent, train_interval=4, batch 32: DQNAgent.fit (n_envs = 1) {seq:,.0f} "
          "env steps/s")
    vecs = {}
    for n_envs in sorted({8, args.n_envs}):            # 8: the [dqn] n_envs default
        ag = tuned(3)
        fit_vector(ag, env, 2000, n_envs=n_envs)       # trace
        ag = tuned(3)
        t = time.perf_counter()
        fit_vector(ag, env, n, n_envs=n_envs)
        vec = vecs[n_envs] = n / (time.perf_counter() - t)
        print(f"learning, one agent: fit_vector ({n_envs} envs) {vec:,.0f} env steps/s = {vec / seq:.1f}x "
              "DQNAgent.fit")
    # SB3 runs in a fresh process per thread count: torch and TensorFlow doing work in one process crash it
    # (a segfault in libc seen here), and a fresh process holds only torch's own thread pool
    sbs = {}
    for threads in (1, 0):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--sb3-leg", str(threads),
                              "--years", str(args.years), "--sb3-steps", str(m)],
                             capture_output=True, text=True, timeout=3600)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("SB3 ")]
        if out.returncode != 0 or not line:
            print(f"stable-baselines3 (torch threads {threads or 'default'}): failed: "
                  f"{(out.stdout + out.stderr).strip().splitlines()[-1:]}")
            continue
        _, n_threads, rate, desc = line[-1].split(" ", 3)
        if n_threads == "missing":
            print("stable-baselines3: not installed (pip install -e .[bench] to compare)")
            return
        sbs[int(n_threads)] = float(rate)
        print(f"{desc}: {float(rate):,.0f} env steps/s")
    if not sbs:
        return
    best_threads = max(sbs, key=sbs.get)
    ratios = ", ".join(f"fit_vector ({k} envs) / SB3 = {v / sbs[best_threads]:.1f}x" for k, v in vecs.items())
    print(f"against SB3 at its best setting here (torch threads = {best_threads}; mltrade's agents on "
          f"TensorFlow's default thread pools): {ratios}")


def sb3_leg(threads: int, years: int, steps: int) -> None:
    """SB3's DQN on the same environment in this (fresh) process; ``threads`` 0 = torch's default."""
    try:
        import torch
        from stable_baselines3 import DQN
    except ImportError:
        print("SB3 missing 0 -")
        return
    from mltrade.feeds.sample import load_daily
    from mltrade.models.dqn.env import KnockoutEnv
    from mltrade.models.dqn.observations import original_observations

    if threads:
        torch.set_num_threads(threads)
    daily = load_daily("2014-01-01", None).iloc[-252 * years:]
    env = KnockoutEnv(original_observations(daily), daily, mode="day")
    env.random_start, env.episode_length = True, 250
    sb = DQN("MlpPolicy", env, learning_starts=100, train_freq=4, batch_size=32, buffer_size=50000,
             target_update_interval=10000, policy_kwargs={"net_arch": [64, 32]}, seed=0, device="cpu")
    sb.learn(1000)
    t = time.perf_counter()
    sb.learn(steps)
    rate = steps / (time.perf_counter() - t)
    print(f"SB3 {torch.get_num_threads()} {rate:.1f} stable-baselines3 {sb3_version()} DQN (1 env, same "
          f"train_freq/batch/net), torch {torch.__version__} on the CPU, torch threads = {torch.get_num_threads()}"
          f"{'' if threads else ' (its default)'}")


def sb3_version() -> str:
    import stable_baselines3
    return stable_baselines3.__version__


if __name__ == "__main__":
    main()
