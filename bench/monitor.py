"""Model health without labels (issue 25): a PhraseBank run monitored on in-domain PhraseBank windows, on Twitter
Financial News, and on a feed that shifts from one to the other; each window's estimated accuracy (CBPE and ATC)
against its true accuracy, drift flags, detection delay and false alarms.

    python bench/monitor.py                      # train (or reuse) the run, then every part
    python bench/monitor.py --server             # also: serve's throughput with and without --log_predictions
    python bench/monitor.py --server_only        # only the server rows again (the other parts as saved)

The run: MiniLM LoRA on PhraseBank (all agreement levels, so that unseen sentences of the same kind exist) trained on
2,000 of its training-split sentences; the ~1,900 it never saw and its test split are the in-domain pool. False
alarms: share of drifting windows among --bootstrap in-domain windows of 500 drawn without replacement. Tweets: the
published validation split. Prints the CPU model and the load average before and after each part.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from finsent.core.serialization import write_json, write_text
from finsent.core.text import sentence_hash
from finsent.data.corpus import load_data
from finsent.data.labels import LABELS
from finsent.data.splits import split_data
from finsent.inference.factory import PredictorOptions, build_predictor
from finsent.monitoring.config import MonitorThresholds
from finsent.monitoring.reference import build_reference
from finsent.monitoring.report import monitor, novelty_distances, window_record
from finsent.runs.folder import read_sentences
from finsent.training.config import TrainConfig
from finsent.training.trainer import train

sys.path.insert(0, str(Path(__file__).parent))
from domains import cpu_model, load  # noqa: E402
from serving import ab_level  # noqa: E402


def ensure_run(out: Path) -> Path:
    if not (out / "results.json").is_file():
        cfg = TrainConfig(
            data_path=["phrasebank"],
            agreement="50",
            use_lora=True,
            max_train_samples=2000,
            seed=0,
            output_dir=str(out),
            version="monitor-pb",
            tracking_uri=f"sqlite:///{out.parent.resolve()}/mlruns.db",
        )
        train(cfg)
    return out


def pools(run: Path) -> dict:
    """In-domain (unseen training-split sentences and the test split) and tweets, as texts and labels."""
    data = load_data(["phrasebank"], "50")
    splits = split_data(data, 0)
    seen = set(read_sentences(run)["train"])
    unseen = [(t, y) for t, y in zip(splits.train.texts, splits.train.labels) if sentence_hash(t) not in seen]
    order = np.random.default_rng(0).permutation(len(unseen))  # a split keeps the file's order, grouped by label
    unseen = [unseen[i] for i in order]
    tweets = split_data(load_data(["twitter-financial-news"]), 0).test
    return {
        "unseen": ([t for t, _ in unseen], np.array([y for _, y in unseen])),
        "test": (splits.test.texts, np.asarray(splits.test.labels)),
        "tweets": (tweets.texts, np.asarray(tweets.labels)),
    }


def scored(predictor, texts: list[str], labels: np.ndarray) -> pd.DataFrame:
    probs = predictor.score(texts).probs
    frame = pd.DataFrame(probs, columns=[f"prob_{x}" for x in LABELS])
    frame["truth"] = [LABELS[y] for y in labels]
    frame["text"] = texts
    frame["text_length"] = [float(len(t)) for t in texts]
    return frame


def window_rows(report_windows: list[dict], part: str) -> list[dict]:
    return [
        {
            "part": part,
            "window": w["index"],
            "n": w["n"],
            "accuracy": w["accuracy"],
            "cbpe": w["estimated_accuracy"],
            "cbpe_ci": w["estimated_accuracy_ci"],
            "atc": w["estimated_accuracy_atc"],
            "drift": w["drift"],
            "tests": w["drifting_tests"],
            "novelty_share": w["novelty_share"],
            **({"tweet_share": w["tweet_share"]} if "tweet_share" in w else {}),
        }
        for w in report_windows
    ]


def bootstrap(frame: pd.DataFrame, ref, th, dist, n: int, size: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n):
        idx = np.sort(rng.choice(len(frame), size, replace=False))
        w = window_record(frame.iloc[idx].reset_index(drop=True), ref, th, None if dist is None else dist[idx])
        out.append({"index": b, **w})
    return out


def shifting(frames: dict, steps: int, size: int, seed: int) -> pd.DataFrame:
    """Windows of `size` rows whose tweet share rises from 0 to 1 over `steps` windows."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(steps):
        n_tweets = round(size * k / (steps - 1))
        tw = frames["tweets"].iloc[rng.choice(len(frames["tweets"]), n_tweets, replace=False)]
        pb = frames["unseen"].iloc[rng.choice(len(frames["unseen"]), size - n_tweets, replace=False)]
        parts.append(pd.concat([pb, tw]).sample(frac=1.0, random_state=seed + k))
    return pd.concat(parts, ignore_index=True)


def summarise(rows: list[dict]) -> dict:
    labelled = [r for r in rows if r["accuracy"] is not None]
    err = lambda key: [abs(r[key] - r["accuracy"]) for r in labelled]  # noqa: E731
    return {
        "windows": len(rows),
        "drifting": sum(r["drift"] for r in rows),
        "mean_accuracy": float(np.mean([r["accuracy"] for r in labelled])),
        "cbpe_mean_abs_error": float(np.mean(err("cbpe"))),
        "cbpe_max_abs_error": float(np.max(err("cbpe"))),
        "cbpe_bias": float(np.mean([r["cbpe"] - r["accuracy"] for r in labelled])),
        "atc_mean_abs_error": float(np.mean(err("atc"))),
        "atc_max_abs_error": float(np.max(err("atc"))),
        "atc_bias": float(np.mean([r["atc"] - r["accuracy"] for r in labelled])),
        "ci_coverage": float(np.mean([r["cbpe_ci"][0] <= r["accuracy"] <= r["cbpe_ci"][1] for r in labelled])),
    }


def run_parts(args, run: Path) -> dict:
    th = MonitorThresholds()
    ref = build_reference(run, th)
    predictor = build_predictor(run, PredictorOptions(backend="torch"))
    frames = {name: scored(predictor, *pair) for name, pair in pools(run).items()}
    results = {"run": str(run), "reference": ref.summary(), "parts": {}}
    dist = {name: novelty_distances(f, ref) for name, f in frames.items()}
    # (a) in-domain: the test split then the unseen sentences, in windows of 500; then bootstrapped unseen windows
    ordered = pd.concat([frames["test"], frames["unseen"]], ignore_index=True)
    a = monitor(ordered, ref, ("rows", args.size), th)
    boot = bootstrap(frames["unseen"], ref, th, dist["unseen"], args.bootstrap, args.size, 0)
    # (b) tweets, in windows of 500 and of 100 (detection delay)
    b = monitor(frames["tweets"], ref, ("rows", args.size), th)
    b_small = monitor(frames["tweets"], ref, ("rows", 100), th)
    # (c) a feed that shifts from PhraseBank to tweets over 11 windows
    mixed = shifting(frames, 11, args.size, 0)
    c = monitor(mixed, ref, ("rows", args.size), th)
    for w, k in zip(c["windows"], range(11)):
        w["tweet_share"] = k / 10
    for name, windows in (
        ("a_in_domain", a["windows"]),
        ("a_bootstrap", boot),
        ("b_tweets", b["windows"]),
        ("b_tweets_100", b_small["windows"]),
        ("c_shift", c["windows"]),
    ):
        rows = window_rows(windows, name)
        results["parts"][name] = {"summary": summarise(rows), "windows": rows}
    results["parts"]["b_tweets"]["rows_until_first_drift"] = b["summary"]["rows_until_first_drift"]
    results["parts"]["b_tweets_100"]["rows_until_first_drift"] = b_small["summary"]["rows_until_first_drift"]
    return results


def tweets_part(run: Path, size: int) -> dict:
    """Part (b) alone for another run (e.g. the AllAgree default): its estimate against the truth on the tweets."""
    th = MonitorThresholds()
    ref = build_reference(run, th)
    tweets = split_data(load_data(["twitter-financial-news"]), 0).test
    frame = scored(build_predictor(run, PredictorOptions(backend="torch")), tweets.texts, np.asarray(tweets.labels))
    report = monitor(frame, ref, ("rows", size), th)
    rows = window_rows(report["windows"], "b_tweets")
    return {
        "run": str(run),
        "test_accuracy": ref.results.get("accuracy"),
        "temperature": ref.temperature,
        "summary": summarise(rows),
        "windows": rows,
    }


def server_part(run: Path, work: Path, seconds: int, clients: int, rounds: int) -> dict:
    """ab against serve without and with --log_predictions (alternating), then /metrics scrape times."""
    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from servers import start_server, stop_server

    sentence = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn."
    rows = []
    for r in range(rounds):
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):  # alternating, so that drift favours neither
            extra = ["--metrics_public"] + (["--log_predictions", str(work / f"log-{r}")] if mode == "on" else [])
            log = work / f"serve-{mode}-{r}.log"
            proc, base = start_server(run, log, *extra)
            try:
                ab_level(base, sentence, clients, 3, keep_alive=True)  # warm-up
                before = load()
                level = ab_level(base, sentence, clients, seconds, keep_alive=True)
                found = {k: level[k] for k in ("requests_per_s", "errors", "p50_ms", "p99_ms")}
                rows.append({"log_predictions": mode, "round": r, **found, "load_before": before, "load_after": load()})
                print(f"serve --log_predictions {mode} round {r}: {found}; load {before} -> {load()}", flush=True)
                if mode == "on" and r == 0:
                    times = []
                    with httpx.Client() as client:
                        for _ in range(200):
                            start = time.perf_counter()
                            client.get(f"{base}/metrics").raise_for_status()
                            times.append((time.perf_counter() - start) * 1000)
                    scrape = {"median_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99))}
            finally:
                stop_server(proc, log)
    rate = {m: float(np.mean([r["requests_per_s"] for r in rows if r["log_predictions"] == m])) for m in ("off", "on")}
    return {"rows": rows, "mean_requests_per_s": rate, "cost": 1 - rate["on"] / rate["off"], "metrics_scrape": scrape}


def to_markdown(results: dict, cpu: str) -> str:
    ref = results["reference"]
    lines = [
        f"# Model health without labels ({cpu}, {os.cpu_count()} cores)",
        "",
        f"`python bench/monitor.py`: run `{results['run']}` (test accuracy {ref['test_accuracy']:.4f}, reference "
        f"estimate {ref['estimated_test_accuracy']:.4f}, temperature {ref['temperature']:.3f}). Windows of "
        f"{results['size']} rows unless named; estimates against the true accuracy of each window.",
        "",
        "| part | windows | drifting | mean true acc | CBPE mean / max abs error | CBPE bias | ATC mean / max abs error "
        "| ATC bias | CBPE interval covers truth |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, part in results["parts"].items():
        s = part["summary"]
        lines.append(
            f"| {name} | {s['windows']} | {s['drifting']} | {s['mean_accuracy']:.4f} | {s['cbpe_mean_abs_error']:.4f} / "
            f"{s['cbpe_max_abs_error']:.4f} | {s['cbpe_bias']:+.4f} | {s['atc_mean_abs_error']:.4f} / "
            f"{s['atc_max_abs_error']:.4f} | {s['atc_bias']:+.4f} | {s['ci_coverage']:.0%} |"
        )
    lines += [
        "",
        "Tweets: rows read until the first drifting window ends: "
        f"{results['parts']['b_tweets']['rows_until_first_drift']} (windows of {results['size']}), "
        f"{results['parts']['b_tweets_100']['rows_until_first_drift']} (windows of 100).",
        "",
        "The shifting feed, window by window:",
        "",
        "| tweet share | true acc | CBPE | ATC | drift | tests |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for w in results["parts"]["c_shift"]["windows"]:
        lines.append(
            f"| {w['tweet_share']:.0%} | {w['accuracy']:.4f} | {w['cbpe']:.4f} | {w['atc']:.4f} | "
            f"{'yes' if w['drift'] else 'no'} | {', '.join(w['tests'])} |"
        )
    for other in results.get("tweets_runs", []):
        t = other["summary"]
        lines += [
            "",
            f"Tweets (windows of {results['size']}) for `{other['run']}` (test accuracy {other['test_accuracy']:.4f}, "
            f"temperature {other['temperature']:.3f}): true accuracy {t['mean_accuracy']:.4f}, CBPE mean / max abs "
            f"error {t['cbpe_mean_abs_error']:.4f} / {t['cbpe_max_abs_error']:.4f} (bias {t['cbpe_bias']:+.4f}), ATC "
            f"{t['atc_mean_abs_error']:.4f} / {t['atc_max_abs_error']:.4f} (bias {t['atc_bias']:+.4f}); "
            f"{t['drifting']} of {t['windows']} windows drifting.",
        ]
    if "server" in results:
        sv = results["server"]
        lines += [
            "",
            f"Server, one sentence a request, ab -k -c {results['clients']} for {results['seconds']} s a row:",
            "",
            "| --log_predictions | round | requests/s | errors | p50 ms | p99 ms | load before / after |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sv["rows"]:
            lines.append(
                f"| {r['log_predictions']} | {r['round']} | {r['requests_per_s']:.0f} | {r['errors']} | "
                f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['load_before'][0]:.2f} / "
                f"{r['load_after'][0]:.2f} |"
            )
        lines += [
            "",
            f"Cost of --log_predictions: {sv['cost']:.1%} of throughput (mean of rounds). /metrics scrape: "
            f"median {sv['metrics_scrape']['median_ms']:.1f} ms, p99 {sv['metrics_scrape']['p99_ms']:.1f} ms.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/monitor"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/monitor"))
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--server", action="store_true")
    parser.add_argument("--tweets_run", type=Path, help="another run: only its tweets part, added to the saved results")
    parser.add_argument("--server_only", action="store_true", help="keep the saved parts, measure the server again")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    cpu = cpu_model()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load {load()}", flush=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    run = ensure_run(args.work_dir / "pb-run")
    saved = args.out.with_suffix(".json")
    if args.tweets_run:  # part (b) for another run, added to the saved results
        results = json.loads(saved.read_text())
        runs = [r for r in results.get("tweets_runs", []) if r["run"] != str(args.tweets_run)]
        results["tweets_runs"] = runs + [tweets_part(args.tweets_run, args.size)]
        write_json(saved, results)
        write_text(args.out.with_suffix(".md"), to_markdown(results, cpu))
        print(to_markdown(results, cpu))
        return 0
    if args.server_only and saved.is_file():  # the estimate and drift parts as saved; only the server rows again
        results = json.loads(saved.read_text())
    else:
        before = load()
        results = {**run_parts(args, run), "size": args.size, "cpu": cpu, "load_before": before, "load_after": load()}
        print(f"monitor parts: load {before} -> {results['load_after']}", flush=True)
    if args.server or args.server_only:
        if not (run / "onnx").is_dir():
            from finsent.export.onnx import export_onnx

            export_onnx(run, None)
        results.update(
            server=server_part(run, args.work_dir, args.seconds, args.clients, args.rounds),
            seconds=args.seconds,
            clients=args.clients,
        )
    write_json(args.out.with_suffix(".json"), results)
    write_text(args.out.with_suffix(".md"), to_markdown(results, cpu))
    print(to_markdown(results, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
