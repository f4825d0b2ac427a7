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
import re
import sys
import time

from replikv.check import Op, check_history, dump_history, format_result

# Client timing, in nanoseconds: think time before a call, the delays from call to the
# linearization point and from there to the reply, and the timeout after which a client
# gives up on an operation (its outcome becomes unknown).
THINK_NS_MAX = 200_000
LATENCY_NS_MEAN = 300_000
CLIENT_TIMEOUT_NS = 5_000_000
FAIL_FRACTION = 0.03
UNKNOWN_FRACTION = 0.05
KIND_WEIGHTS = {"get": 40, "set": 20, "cas": 15, "incr": 15, "del": 10}


def _counter(value: bytes | None) -> int | None:
    """What INCR sees: absent is 0; a canonical decimal is its value; anything else refuses."""
    if value is None:
        return 0
    if re.fullmatch(rb"0|-?[1-9][0-9]{0,18}", value) is None:
        return None
    return int(value)


def generate_history(ops_count: int, keys_count: int, clients_count: int, seed: int) -> list[Op]:
    rng = random.Random(seed)
    keys = [b"key:%d" % k for k in range(keys_count)]
    kinds = list(KIND_WEIGHTS)
    weights = list(KIND_WEIGHTS.values())

    # First the schedule: who calls what when, when it takes effect (if ever), when it returns.
    plans = []  # [client, key, kind, call_ns, effect_ns | None, return_ns | None, outcome]
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
        plans.append(
            [
                client,
                rng.choice(keys),
                rng.choices(kinds, weights)[0],
                call_ns,
                effect,
                return_ns,
                outcome,
            ]
        )
        client_free_ns[client] = call_ns + CLIENT_TIMEOUT_NS if return_ns is None else return_ns

    # Then run the model in effect order; arguments are chosen as the op takes effect.
    state: dict[bytes, bytes | None] = dict.fromkeys(keys)
    written: dict[bytes, list[bytes]] = {key: [b"0"] for key in keys}
    fresh = iter(range(1, 1 << 62))
    args: dict[int, tuple[bytes | None, bytes | None]] = {}
    results: dict[int, object] = {}

    def arguments(n: int, current: bytes | None) -> tuple[bytes | None, bytes | None]:
        _, key, kind, *_ = plans[n]
        if kind == "set":
            return b"%d" % (1000 * next(fresh)), None
        if kind == "cas":
            if current is not None and rng.random() < 0.7:
                expected = current
            else:
                expected = rng.choice(written[key])
            return b"%d" % (1000 * next(fresh)), expected
        return None, None

    applied = sorted((p[4], n) for n, p in enumerate(plans) if p[4] is not None)
    for _, n in applied:
        _, key, kind, *_ = plans[n]
        current = state[key]
        value, expected = args[n] = arguments(n, current)
        if kind == "get":
            results[n] = current
        elif kind == "set":
            state[key] = value
        elif kind == "cas":
            results[n] = current == expected
            if current == expected:
                state[key] = value
        elif kind == "del":
            results[n] = int(current is not None)
            state[key] = None
        else:
            count = _counter(current)
            if count is None:  # Redis refuses INCR on a non-integer: no effect, an error reply
                if plans[n][6] == "ok":
                    plans[n][6] = "fail"
                continue
            results[n] = count + 1
            state[key] = b"%d" % (count + 1)
        if state[key] is not None:
            written[key].append(state[key])
    for n in range(len(plans)):
        if n not in args:  # never took effect: arguments as if chosen on an absent key
            args[n] = arguments(n, None)

    history = []
    for n, (client, key, kind, call_ns, _, return_ns, outcome) in enumerate(plans):
        value, expected = args[n]
        result = results.get(n) if outcome == "ok" else None
        history.append(Op(client, key, kind, value, expected, call_ns, return_ns, outcome, result))
    return history


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
