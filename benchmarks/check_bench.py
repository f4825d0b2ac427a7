"""How fast is the linearizability checker on a realistic history? Run as a script:

    .venv/bin/python benchmarks/check_bench.py [--ops 20000] [--keys 20] [--clients 10]
        [--seed 1] [--timeout-s S] [--corrupt] [--profile] [--save history.jsonl]

It generates a history the way a fault test would see one, from a run of a sequential model:
each client issues one operation at a time against a random key, every operation takes effect at
an instant inside its call/return interval, about 3% fail with no effect (TRYAGAIN) and about 5%
time out (unknown outcome: half of those took effect, possibly well after the client gave up).
Then it checks the history (which must be linearizable) and prints ops, keys, elapsed seconds
and ops/s. `--corrupt` first changes one get's result to a value nobody wrote, to time how fast
a violation is found (the check must then fail). `--profile` prints the top of a cProfile run.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time

from replikv.check import Op, check_history, dump_history, format_result
from replikv.check.synthetic import Plan, history_from_plans

# Client timing, in nanoseconds: think time before a call, the delays from call to the
# linearization point and from there to the reply, and the timeout after which a client
# gives up on an operation (its outcome becomes unknown).
THINK_NS_MAX = 200_000
LATENCY_NS_MEAN = 300_000
CLIENT_TIMEOUT_NS = 5_000_000
FAIL_FRACTION = 0.03
UNKNOWN_FRACTION = 0.05
KIND_WEIGHTS = {"get": 40, "set": 20, "cas": 15, "incr": 15, "del": 10}


def generate_history(ops_count: int, keys_count: int, clients_count: int, seed: int) -> list[Op]:
    rng = random.Random(seed)
    keys = [b"key:%d" % k for k in range(keys_count)]
    kinds = list(KIND_WEIGHTS)
    weights = list(KIND_WEIGHTS.values())

    # First the schedule: who calls what when, when it takes effect (if ever), when it returns.
    plans = []
    client_free_ns = [rng.randrange(THINK_NS_MAX) for _ in range(clients_count)]
    for _ in range(ops_count):
        client = min(range(clients_count), key=client_free_ns.__getitem__)
        call_ns = client_free_ns[client] + rng.randrange(THINK_NS_MAX)
        effect_ns = call_ns + int(rng.expovariate(1 / LATENCY_NS_MEAN))
        return_ns = effect_ns + int(rng.expovariate(1 / LATENCY_NS_MEAN))
        r = rng.random()
        if r < FAIL_FRACTION:
            outcome, effect = "fail", None
        elif r < FAIL_FRACTION + UNKNOWN_FRACTION:
            outcome, return_ns = "unknown", None
            # Half the timed-out ops took effect, some of them long after the timeout.
            effect = (
                effect_ns + rng.choice((0, 0, 10 * CLIENT_TIMEOUT_NS))
                if rng.random() < 0.5
                else None
            )
        else:
            outcome, effect = "ok", effect_ns
        plans.append(Plan(client, rng.choice(keys), rng.choices(kinds, weights)[0], call_ns,
                          effect, return_ns, outcome))
        client_free_ns[client] = call_ns + CLIENT_TIMEOUT_NS if return_ns is None else return_ns

    # Then the model run; arguments are chosen as each op takes effect.
    written: dict[bytes, list[bytes]] = {key: [b"0"] for key in keys}
    fresh = iter(range(1, 1 << 62))

    def arguments(plan: Plan, current: bytes | None) -> tuple[bytes | None, bytes | None]:
        if plan.kind == "set":
            return b"%d" % (1000 * next(fresh)), None
        if plan.kind == "cas":
            if current is not None and rng.random() < 0.7:
                expected = current
            else:
                expected = rng.choice(written[plan.key])
            return b"%d" % (1000 * next(fresh)), expected
        return None, None

    return history_from_plans(plans, arguments,
                              on_value=lambda key, value: written[key].append(value))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=None)
    parser.add_argument("--corrupt", action="store_true", help="make one get read garbage")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--save", help="also write the history to this JSON Lines file")
    options = parser.parse_args(argv)

    history = generate_history(options.ops, options.keys, options.clients, options.seed)
    if options.corrupt:
        gets = [n for n, op in enumerate(history) if op.kind == "get" and op.outcome == "ok"]
        n = random.Random(options.seed).choice(gets)
        op = history[n]
        history[n] = Op(op.client, op.key, "get", None, None, op.call_ns, op.return_ns, "ok", b"?")
    if options.save:
        dump_history(history, options.save)
    outcomes = {o: sum(op.outcome == o for op in history) for o in ("ok", "fail", "unknown")}
    print(
        f"history: {len(history)} ops, {options.keys} keys, {options.clients} clients, "
        f"seed {options.seed}; outcomes {outcomes}"
    )

    profiler = cProfile.Profile() if options.profile else None
    started_s = time.perf_counter()
    if profiler:
        profiler.enable()
    result = check_history(history, timeout_s=options.timeout_s)
    if profiler:
        profiler.disable()
    elapsed_s = time.perf_counter() - started_s
    print(format_result(result))
    print(
        f"ops {len(history)}  keys {options.keys}  elapsed {elapsed_s:.3f} s  "
        f"{len(history) / elapsed_s:,.0f} ops/s"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(15)
    expected = not options.corrupt
    return 0 if result.ok is expected else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
