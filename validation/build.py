"""Build the validation bank: finite networks sampled from their exact posterior, case by case.

Every case of cases.toml is sampled by two independent samplers, HMC on the whitened weights and HMC
on the pre-activations (T19; the weights integrated out), in units of a few chains. (NUTS on the
weights, tried first, took over 10 minutes for one unit of MNIST P = 30: trees of hundreds of steps.)
Each unit checkpoints its chains to work/CASE/ after the warm-up and after each of its 10 batches
(a few minutes apart at P = 300) and is written there the moment it ends, so a killed build resumes
where it was (it loses at most the minutes since the last checkpoint). Units are added until the
pooled R-hat of the CKA of every layer is at most RHAT_MAX and its ESS at least MIN_ESS (MIN_UNITS
to MAX_UNITS units per sampler). A finished case is written atomically to cases/CASE.npz (kernels,
MCSE, predictions) and cases/CASE.json (config, diagnostics, verdict); a case that fails its own
checks is written too, flagged, and is no reference.

  python validation/build.py                       # every unfinished case, in file order
  python validation/build.py erf-mnist-L2-P30      # the named cases
  python validation/build.py --status              # what is done
  python validation/build.py --estimate CASE        # minutes per unit, before sampling (~2 min)
  MNIST=path/to/idx/files python validation/build.py ...   # default: ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
import tomllib
from pathlib import Path

import critical_kernels as ck

ck.use_one_xla_thread()  # before JAX's first computation (jaxlib < 0.11.2 batched-LAPACK deadlock)

import numpy as np  # noqa: E402

from critical_kernels.estimators.diagnostics import chain_diagnostics  # noqa: E402
from critical_kernels.estimators.options import as_dict  # noqa: E402
from critical_kernels.experiments.runner import versions  # noqa: E402
from critical_kernels.metrics import cka_layers, cka_layers_se  # noqa: E402

HERE = Path(__file__).resolve().parent
SAMPLERS = {  # two parameterisations of the same posterior: independent routes to it
    "hmc-weights": ck.HMC(n_leapfrog=16),
    # few leapfrog steps: at 16 the adapted trajectory maps u to -u, leaving the kernels unchanged
    "hmc-preactivation": ck.HMC(n_leapfrog=4, space="preactivation"),
}
UNIT = ck.Chains(chains=2, warmup=500, n_samples=2000, thin=10, n_batches=10)
MIN_UNITS, MAX_UNITS = 2, 6  # per sampler: 4 to 12 chains
RHAT_MAX, MIN_ESS = 1.01, 400.0  # of the CKA of every layer, pooled over the units
AGREE_Z = 3.0  # the two samplers' CKA per layer within 3 combined SE


def load_cases(path: Path = HERE / "cases.toml") -> dict[str, dict]:
    table = tomllib.loads(path.read_text())
    defaults = table.get("defaults", {})
    return {c["name"]: {**defaults, **c} for c in table["case"]}


def problem(case: dict, mnist: Path):
    """The NetworkSpec and data of a case (N = P / alpha)."""
    P = case["n_train"]
    width = round(P / case["alpha"])
    spec = ck.NetworkSpec(
        depth=case["depth"],
        width=width,
        activation=case["activation"],
        g_w=case["g_w"],
        g_b=case["g_b"],
        kappa=case["kappa"],
    )
    if case["task"] == "mnist":
        data = ck.datasets.mnist_binary(
            (0, 3), path=mnist, n_train=P, n_test=case["n_test"], seed=case["seed"]
        )
    else:
        data = ck.datasets.xor(n_train=P, n_test=case["n_test"], dim=10, seed=case["seed"])
    return spec, data


def _key(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def _atomic_save(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def run_unit(case: dict, sampler: str, index: int, mnist: Path, checkpoint: Path) -> dict:
    """One unit: UNIT.chains chains of one sampler with their own warm-up and key, checkpointed."""
    spec, data = problem(case, mnist)
    start = time.perf_counter()
    est = ck.sample_posterior(
        spec,
        data.X,
        data.Y,
        data.X_test,
        sampler=SAMPLERS[sampler],
        chains=dataclasses.replace(UNIT, checkpoint=checkpoint),
        key=_key(case["name"], sampler, index),
        throw=False,
    )
    chains = UNIT.chains
    batches = est.estimates.kernels.reshape((chains, -1) + est.kernels.shape)
    pred = est.predictive  # of the output f*; the bank stores y* = f* + noise (variance + kappa)
    return {
        "batches": batches.astype(np.float32),
        "cka_draws": est.info.cka_draws,
        "acceptance": est.info.acceptance,
        "step_size": est.info.step_size,
        "f_test": pred.mean,
        "f_test_var": pred.var + spec.kappa,  # the posterior predictive of y* (T21), with SEs
        "f_test_se": pred.mean_se,
        "f_test_var_se": pred.var_se,
        "f_test_means": pred.means,  # batch means of E[f*] and E[f*^2]: SEs of any test score
        "f_test_seconds": pred.seconds,
        "grad_evals": est.info.grad_evals,
        "seconds": time.perf_counter() - start,
    }


def _batches_done(checkpoint: Path) -> int:
    """The batches a unit's chain checkpoint holds (0: warmed up)."""
    with np.load(checkpoint) as f:
        return json.loads(f["meta"].tobytes())["batches"]


def units(folder: Path, sampler: str) -> list[dict]:
    return [dict(np.load(p)) for p in sorted(folder.glob(f"{sampler}-*.npz"))]


def pooled(parts: list[dict], Y) -> dict:
    """Mean kernels, MCSE (batch means), CKA with its SE, R-hat and ESS of the CKA over all units."""
    batches = np.concatenate([u["batches"] for u in parts]).astype(np.float64)  # (chains, B, L+1, P', P')
    flat = batches.reshape((-1,) + batches.shape[2:])
    mean = flat.mean(axis=0)
    rhat, ess = chain_diagnostics(np.concatenate([u["cka_draws"] for u in parts]))
    return {
        "kernels": mean,
        "mcse": ck.standard_error(flat, "batches"),
        "cka": cka_layers(mean, Y),
        "cka_se": cka_layers_se(flat, Y, kind="batches"),
        "rhat_cka": np.concatenate([[1.0], rhat]),
        "ess_cka": np.concatenate([[np.inf], ess]),
        "acceptance": np.concatenate([u["acceptance"] for u in parts]),
        "f_test": np.mean([u["f_test"] for u in parts], axis=0),
        **_pooled_predictive(parts),
        "chains": batches.shape[0],
        "seconds": float(sum(float(u["seconds"]) for u in parts)),
        "grad_evals": int(sum(int(u["grad_evals"]) for u in parts)),
    }


def _pooled_predictive(parts: list[dict]) -> dict:
    """The predictive variance of y* over equal units (law of total variance across them) and the
    SEs of mean and variance (independent units); nothing where a unit predates it (0.7)."""
    if not all("f_test_var" in u for u in parts):
        return {}
    m, v = np.stack([u["f_test"] for u in parts]), np.stack([u["f_test_var"] for u in parts])
    n = len(parts)
    return {
        "f_test_var": (v + m**2).mean(axis=0) - m.mean(axis=0) ** 2,
        "f_test_se": np.sqrt(sum(u["f_test_se"] ** 2 for u in parts)) / n,
        "f_test_var_se": np.sqrt(sum(u["f_test_var_se"] ** 2 for u in parts)) / n,
    }


def converged(result: dict) -> bool:
    return bool(np.all(result["rhat_cka"] <= RHAT_MAX) and np.all(result["ess_cka"] >= MIN_ESS))


def sample_case(case: dict, mnist: Path, work: Path, log) -> dict:
    """Units of both samplers until each converges (or MAX_UNITS); their pooled results."""
    folder = work / case["name"]
    folder.mkdir(parents=True, exist_ok=True)
    spec, data = problem(case, mnist)
    results = {}
    for sampler in SAMPLERS:
        while True:
            done = units(folder, sampler)
            if len(done) >= MIN_UNITS and (converged(pooled(done, data.Y)) or len(done) >= MAX_UNITS):
                break
            index = len(done)
            eta = ""
            if done:  # the units still needed at least, at the pace of those done
                pace = float(np.median([u["seconds"] for u in done]))
                to_go = max(MIN_UNITS - index, 1) * pace
                eta = f", about {pace / 60:.0f} min each, at least {to_go / 60:.0f} min to go"
            log(f"{case['name']}: {sampler} unit {index + 1} (at most {MAX_UNITS}{eta}) ...")
            chains = folder / f"{sampler}-{index:02d}.chains"  # not *.npz: not a unit yet
            try:
                unit = run_unit(case, sampler, index, mnist, chains)
            except ck.InputError as err:  # a checkpoint of older code or settings: the unit afresh
                if not chains.is_file():
                    raise
                log(f"{case['name']}: {err}; sampling the unit afresh")
                chains.unlink()
                unit = run_unit(case, sampler, index, mnist, chains)
            _atomic_save(folder / f"{sampler}-{index:02d}.npz", lambda f, u=unit: np.savez(f, **u))
            chains.unlink(missing_ok=True)
            log(f"{case['name']}: {sampler} unit {index + 1} took {unit['seconds']:.0f} s")
        results[sampler] = pooled(units(folder, sampler), data.Y)
    return results


def estimate(case: dict, mnist: Path) -> dict:
    """Minutes per unit of each sampler, from two short runs (their difference cancels compilation)."""
    spec, data = problem(case, mnist)
    minutes = {}
    for sampler, options in SAMPLERS.items():
        seconds = []
        for steps in (10, 30):
            chains = ck.Chains(chains=UNIT.chains, warmup=steps, n_samples=steps, thin=1, n_batches=2)
            begin = time.perf_counter()
            ck.sample_posterior(
                spec, data.X, data.Y, data.X_test, sampler=options, chains=chains, throw=False
            )
            seconds.append(time.perf_counter() - begin)
        per_step = (seconds[1] - seconds[0]) / 40
        minutes[sampler] = per_step * (UNIT.warmup + UNIT.n_samples) / 60
    return minutes


def verdict(results: dict) -> dict:
    """Each sampler's own checks, and their agreement: z of the CKA difference per layer."""
    a, b = (results[s] for s in SAMPLERS)
    combined = np.hypot(a["cka_se"], b["cka_se"])
    z = np.where(combined > 0, (a["cka"] - b["cka"]) / np.where(combined > 0, combined, 1), 0.0)
    own = {s: converged(r) and bool(np.all(r["acceptance"] >= 0.1)) for s, r in results.items()}
    agree = bool(np.all(np.abs(z) <= AGREE_Z))
    return {"converged": own, "z_cka": z.tolist(), "agree": agree, "usable": agree and all(own.values())}


def _upper(K: np.ndarray) -> np.ndarray:
    """The upper triangles (diagonal included) of symmetric matrices (..., n, n)."""
    i, j = np.triu_indices(K.shape[-1])
    return K[..., i, j]


def write_case(case: dict, results: dict, mnist: Path) -> None:
    """cases/NAME.npz (both samplers' mean kernels as float32 upper triangles, their MCSE as float16,
    their test predictions) and cases/NAME.json (config, diagnostics, verdict, versions)."""
    spec, data = problem(case, mnist)
    arrays = {"Y": data.Y, "Y_test": data.Y_test}
    for s, r in results.items():
        arrays[f"{s}/kernels"] = _upper(r["kernels"]).astype(np.float32)
        arrays[f"{s}/mcse"] = _upper(r["mcse"]).astype(np.float16)
        arrays[f"{s}/f_test"] = r["f_test"]
        arrays |= {f"{s}/{k}": r[k] for k in ("f_test_var", "f_test_se", "f_test_var_se") if k in r}
    out = HERE / "cases"
    out.mkdir(exist_ok=True)
    _atomic_save(out / f"{case['name']}.npz", lambda f: np.savez_compressed(f, **arrays))
    summary = {
        "case": case,
        "width": spec.width,
        "rows": int(len(data.X) + len(data.X_test)),
        "verdict": verdict(results),
        "samplers": {
            s: {
                "options": {"options": type(SAMPLERS[s]).__name__, **as_dict(SAMPLERS[s])},
                "chains": as_dict(UNIT) | {"chains": r["chains"]},
                **{k: np.asarray(r[k]).tolist() for k in ("cka", "cka_se", "rhat_cka", "acceptance")},
                "ess_cka": [None if not np.isfinite(v) else float(v) for v in r["ess_cka"]],
                "seconds": r["seconds"],
                "grad_evals": r["grad_evals"],
            }
            for s, r in results.items()
        },
        "versions": versions(),
    }
    text = json.dumps(summary, indent=1)
    _atomic_save(out / f"{case['name']}.json", lambda f: f.write(text.encode()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="case names (default: every unfinished case)")
    parser.add_argument("--status", action="store_true", help="list the cases and what is done")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="checkpoint folder")
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="time two short runs per sampler; print minutes per unit and case",
    )
    args = parser.parse_args(argv)
    mnist = Path(os.environ.get("MNIST", HERE.parents[1] / "shared" / "data" / "mnist"))
    cases = load_cases()
    unknown = [n for n in args.cases if n not in cases]
    if unknown:
        print(f"error: no case {unknown[0]!r} (known: {', '.join(cases)})", file=sys.stderr)
        return 2
    chosen = args.cases or list(cases)
    if args.status:
        for name in chosen:
            done = (HERE / "cases" / f"{name}.json").is_file()
            folder = args.work / name
            n_units = len(list(folder.glob("*.npz")))
            in_flight = [p for p in sorted(folder.glob("*.chains")) if not p.with_suffix(".npz").exists()]
            flight = [f"{p.stem} at batch {_batches_done(p)}" for p in in_flight]
            print(f"{name:24s} {'done' if done else ', '.join([f'{n_units} units', *flight])}")
        return 0
    if args.estimate:
        for name in chosen:
            minutes = estimate(cases[name], mnist)
            each = ", ".join(f"{s} {m:.0f} min" for s, m in minutes.items())
            print(
                f"{name:24s} per unit: {each}; the case: at least {MIN_UNITS * sum(minutes.values()):.0f} min"
            )
        return 0
    start = time.perf_counter()

    def log(message: str) -> None:
        print(
            f"[{time.strftime('%H:%M:%S')} +{(time.perf_counter() - start) / 60:.0f} min] {message}",
            flush=True,
        )

    for name in chosen:
        if (HERE / "cases" / f"{name}.json").is_file():
            continue
        results = sample_case(cases[name], mnist, args.work, log)
        write_case(cases[name], results, mnist)
        v = verdict(results)
        log(f"{name}: done, usable {v['usable']} (z of the CKA per layer {np.round(v['z_cka'], 2).tolist()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
