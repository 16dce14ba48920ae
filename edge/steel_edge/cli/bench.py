"""``steel-edge bench``'s command line and report table; the measurements are ``steel_edge.bench``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from steel_edge.bench import (
    DESCRIPTION,
    PROG,
    BenchError,
    Steal,
    bench_config,
    bench_e2e,
    bench_live,
    bench_raw,
    bench_subprocess,
    machine,
    make_frames,
    vm_hwm_mb,
)
from steel_edge.config import EdgeConfig
from steel_edge.daemon import BUNDLED_MODEL
from steel_edge.model import available_threads, load_model


def build_parser() -> argparse.ArgumentParser:
    defaults = EdgeConfig()
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="ONNX model (default: the bundled one)")
    parser.add_argument("--frames", type=int, default=400, help="synthetic 1600x256 frames to run (default 400)")
    parser.add_argument("--batch-size", type=int, default=defaults.pipeline.batch_size,
                        help=f"onnxruntime batch (default: the daemon's, {defaults.pipeline.batch_size})")
    parser.add_argument("--threads", type=int, default=defaults.inference.threads,
                        help="intra-op threads (default: the daemon's, the CPU affinity minus one)")
    parser.add_argument("--providers", nargs="+", default=list(defaults.inference.providers), metavar="P",
                        help="onnxruntime execution providers, preferred first (default: the daemon's, CPU); e.g. "
                             "CUDAExecutionProvider CPUExecutionProvider with the edge-gpu extra and --batch-size 16")
    parser.add_argument("--repeat", type=int, default=3, help="raw onnxruntime passes; the median counts (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--skip-subprocess", action="store_true", help="do not run the daemon as a child process")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--clean-share", type=float, nargs="+", metavar="S",
                        help="also run raw onnxruntime and end to end on frames of which this share is defect-free, "
                             "e.g. --clean-share 0.5 0.9 (a line sees mostly clean strip)")
    parser.add_argument("--live-seconds", type=float, default=5.0,
                        help="live-mode phase: a fake camera at twice the end-to-end rate for this long (0: skip)")
    return parser


def run_bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every measurement, in the order that keeps them apart."""
    threads = args.threads or max(1, available_threads() - 1)  # the daemon's own default (daemon.py)
    model_path = Path(args.model).resolve()
    data = work / "data"
    files = make_frames(data, args.frames, args.seed)
    folder = data / "train_images"
    providers = tuple(args.providers)
    model = load_model(model_path, threads=threads, spinning=EdgeConfig().inference.spinning, providers=providers)
    spec = model.contract.input
    report: dict[str, Any] = {
        "machine": machine(), "model": {"path": str(model_path), "sha256": model.sha256, "kind": model.kind,
                                        "form": model.contract.form, "input": f"{spec.width}x{spec.height}"},
        "frames": args.frames, "batch_size": args.batch_size, "threads": threads, "providers": list(providers),
    }
    with Steal() as steal:
        report["raw"] = bench_raw(model, files, args.batch_size, args.repeat)
    report["raw"]["cpu_steal_pct"] = steal.pct
    del model
    if threads < available_threads():
        # for the record: the model alone with every core, which no pipeline that also decodes can reach
        every = load_model(model_path, threads=available_threads(), spinning=EdgeConfig().inference.spinning,
                           providers=providers)
        report["raw_all_cores"] = bench_raw(every, files, args.batch_size, args.repeat)
        del every
    cfg = bench_config(folder, model_path, work / "state-inproc", args.batch_size, threads, providers)
    with Steal() as steal:
        report["e2e"] = bench_e2e(cfg, args.frames)
    report["e2e"]["cpu_steal_pct"] = steal.pct
    report["pipeline_efficiency"] = report["e2e"]["fps"] / report["raw"]["fps"]
    for share in args.clean_share or ():
        report.setdefault("by_clean_share", {})[f"{share:g}"] = _at_clean_share(args, work, model_path, threads, share)
    if args.live_seconds > 0:
        report["live"] = bench_live(model_path, threads, 2 * report["e2e"]["fps"], args.live_seconds, providers)
    if "raw_all_cores" in report:
        report["e2e_vs_raw_all_cores"] = report["e2e"]["fps"] / report["raw_all_cores"]["fps"]
    report["bench_peak_rss_mb"] = vm_hwm_mb()
    if not args.skip_subprocess:
        report["subprocess"] = bench_subprocess(folder, model_path, work / "state-child", args.batch_size, threads,
                                                args.frames, work / "daemon.log", providers)
    return report


def _at_clean_share(args: argparse.Namespace, work: Path, model_path: Path, threads: int,
                    share: float) -> dict[str, Any]:
    """Raw onnxruntime and the whole daemon on frames of which ``share`` is defect-free (same model, settings)."""
    data = work / f"data-clean-{share:g}"
    files = make_frames(data, args.frames, args.seed, clean_share=share)
    providers = tuple(args.providers)
    model = load_model(model_path, threads=threads, spinning=EdgeConfig().inference.spinning, providers=providers)
    with Steal() as steal:
        raw = bench_raw(model, files, args.batch_size, args.repeat)
    del model
    cfg = bench_config(data / "train_images", model_path, work / f"state-clean-{share:g}", args.batch_size, threads,
                       providers)
    e2e = bench_e2e(cfg, args.frames)
    labelled = {row.split(",")[0] for row in (data / "train.csv").read_text().splitlines()[1:]}
    return {"clean_share": share, "clean_frames": args.frames - len(labelled),
            "frames_with_defects_found": e2e["with_defects"], "raw_fps": raw["fps"],
            "e2e_fps": e2e["fps"], "pipeline_efficiency": e2e["fps"] / raw["fps"], "cpu_steal_pct": steal.pct,
            "decoder_skipped_share": raw.get("decoder_skipped_share")}


def _skipped(row: dict[str, Any]) -> str:
    share = row.get("decoder_skipped_share")
    return "" if share is None else f"; the cascade skipped the mask decoder on {share:.0%} of the tiles"


def format_table(r: dict[str, Any]) -> str:
    """The report for a person: one line per figure, the machine first."""
    m = r["machine"]
    e2e, raw = r["e2e"], r["raw"]
    rows = [
        ("machine", f"{m['cpu']}, {m['cores']} cores (affinity), python {m['python']}, "
                    f"onnxruntime {m['onnxruntime']}"),
        ("model", f"{Path(r['model']['path']).name} ({r['model']['kind']}, {r['model'].get('form', 'single')}, "
                  f"{r['model']['input']}, "
                  f"sha256 {r['model']['sha256'][:12]})"),
        ("frames / batch / threads", f"{r['frames']} ({e2e['with_defects']} with defects) / {r['batch_size']} / "
                                     f"{r['threads']}"),
        ("raw onnxruntime", f"{raw['fps']:.1f} frames/s ({raw['frame_ms']:.2f} ms/frame; median of "
                            f"{raw['passes']} passes, best {raw['fps_best']:.1f}{_skipped(raw)})"),
        ("end to end (daemon)", f"{e2e['fps']:.1f} frames/s"),
        ("pipeline efficiency", f"{r['pipeline_efficiency']:.2f} (end to end / raw at the daemon's thread count)"),
        ("cpu steal raw / e2e", f"{raw['cpu_steal_pct']}% / {e2e['cpu_steal_pct']}% (other VMs' share of our CPUs)"),
        ("latency read->received", f"p50 {e2e['latency_ms']['p50']:.1f} ms, p99 {e2e['latency_ms']['p99']:.1f} ms"),
        ("peak RSS (bench process)", f"{r['bench_peak_rss_mb']:.0f} MB"),
    ]
    if "raw_all_cores" in r:
        rows.insert(5, ("raw, every core", f"{r['raw_all_cores']['fps']:.1f} frames/s (the model alone on all "
                                           f"{m['cores']} cores; end to end is {r['e2e_vs_raw_all_cores']:.2f} of it)"))
    for key, c in r.get("by_clean_share", {}).items():
        rows.append((f"{float(key):.0%} defect-free", f"raw {c['raw_fps']:.1f}, end to end {c['e2e_fps']:.1f} frames/s "
                                                   f"(efficiency {c['pipeline_efficiency']:.2f}; {c['clean_frames']} "
                                                   "clean frames" + _skipped(c) + ")"))
    lv = r.get("live")
    if lv:
        lat, late = lv["latency_ms"], lv["latency_ms_second_half"]
        rows.append(("live, camera at 2x e2e", f"{lv['camera_fps']:.0f} frames/s for {lv['seconds']:.0f} s: "
                                               f"{lv['results']} results, {lv['drops']} dropped (counted); latency "
                                               f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms "
                                               f"(second half p99 {late['p99']:.1f} ms)"))
    sp = r.get("subprocess")
    if sp:
        rows += [("daemon process peak RSS", f"{sp['peak_rss_mb']:.0f} MB"),
                 ("process start -> first result", f"{sp['start_to_first_result_s']:.2f} s"),
                 ("daemon process end to end", f"{sp['fps']:.1f} frames/s")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def bench_main(argv: list[str] | None = None) -> int:
    """``steel-edge bench``: 0 when every measurement was made, 1 when one failed, 2 on a bad command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 1 or args.batch_size < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--frames, --batch-size and --threads must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if any(not 0 <= share <= 1 for share in args.clean_share or ()):
        parser.error("--clean-share takes shares from 0 to 1, e.g. 0.5 0.9")
    import onnxruntime as ort

    missing = [p for p in args.providers if p not in ort.get_available_providers()]
    if missing:
        parser.error(f"--providers {' '.join(missing)}: not in this onnxruntime build ({ort.__version__}: "
                     f"{', '.join(ort.get_available_providers())}); CUDA and TensorRT need the edge-gpu extra, "
                     "OpenVINO the edge-openvino extra")
    try:
        with tempfile.TemporaryDirectory(prefix="steel-edge-bench-") as tmp:
            report = run_bench(args, Path(tmp))
    except BenchError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
