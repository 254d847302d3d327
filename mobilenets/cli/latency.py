"""Latency on the device you ship to: ``latency kit`` (the calibration models and the commands
to time them there), ``latency fit`` (the device's coefficients from those timings),
``latency predict`` (every variant's latency there) and ``latency measure`` (the kit timed on
this machine, then fitted). ``pick --device`` chooses by the predicted latency."""
from __future__ import annotations

import sys

from mobilenets.cli.common import (FORMATS, add_output_arguments, add_parser, progress,
                                   write_rows)
from mobilenets.models.registry import ARCH_ALIASES, ARCHS

#: ``latency predict``'s default table (csv and json: every field).
PREDICT_COLUMNS = ("model", "predicted_ms", "width_mult", "resolution", "madds_m", "params_m")


def cmd_kit(args) -> None:
    from mobilenets.deploy.device import make_kit

    manifest = make_kit(args.backend, args.output_dir, arch=args.arch or "v1", count=args.count,
                        threads=args.threads, calibration_data=args.calibration_data,
                        progress=progress)
    lines = [f"wrote {args.output_dir}: {len(manifest['models'])} models for {args.backend} "
             f"({manifest['precision']}, {args.threads} thread(s)), manifest.json, commands.sh, "
             "measurements.csv", "time each on the device:"]
    lines += [f"  {m['command']}" for m in manifest["models"]]
    lines += ["then, with the saved outputs (or measurements.csv filled in):",
              f"  {manifest['fit']}"]
    print("\n".join(lines))


def cmd_fit(args) -> None:
    from mobilenets.cost.latency import write_device
    from mobilenets.deploy.device import fit_measurements

    device = fit_measurements(args.measurements, backend=args.backend, form=args.form,
                              name=args.name)
    write_device(device, args.output)
    print(f"wrote {args.output}: {device.name} ({device.backend or device.precision}), "
          f"{device.form} model with {len(device.terms)} coefficients, fitted on "
          f"{device.residual_summary()}")


def variant_names(arch: str | None, device) -> list[str]:
    """The registered variants of ``arch`` (default: the architecture of the models the device
    was fitted on) that have a width multiplier (V1's full-convolution and shallow baselines
    are not grid points)."""
    from mobilenets.cost.latency import variant_model
    from mobilenets.models.registry import MODELS, arch_name

    if arch is None:
        fitted = [r["model"] for r in device.fitted_on]
        arch = variant_model(fitted[0]).config.arch if fitted else "mobilenet_v1"
    arch = arch_name(arch)
    return [n for n, s in MODELS.items() if s.arch == arch and "width_mult" in s.name_fields]


def cmd_predict(args) -> None:
    from mobilenets.cost.latency import read_device, variant_model, variant_profile

    if args.arch and args.model:
        raise ValueError("--arch predicts every variant of an architecture, --model the ones "
                         "named: give one or the other")
    device = read_device(args.device)
    names = args.model or variant_names(args.arch, device)
    rows = []
    for name in dict.fromkeys(names):
        try:
            model = variant_model(name)
        except ValueError as e:
            raise ValueError(f"--model {name}: {e}") from None
        prof = variant_profile(model)
        rows.append({"model": name, "predicted_ms": round(device.predict_ms(prof), 3),
                     "width_mult": model.config.width_mult,
                     "resolution": prof.input_size[-1],
                     "madds_m": round(prof.total_madds / 1e6, 1),
                     "params_m": round(prof.layer_params / 1e6, 2),
                     "device": device.name, "backend": device.backend,
                     "threads": device.threads})
    print(f"predicted on {device.name} ({device.backend or device.precision}; fitted on "
          f"{device.residual_summary()})", file=sys.stderr)
    write_rows(rows, args.format, args.output, args.wide, columns=PREDICT_COLUMNS)


def cmd_measure(args) -> None:
    from mobilenets.cost.latency import write_device
    from mobilenets.deploy.device import measure_device
    from mobilenets.deploy.machine import machine_info, machine_line

    progress(machine_line(machine_info(args.threads)))
    device = measure_device(args.backend, arch=args.arch or "v1", count=args.count,
                            threads=args.threads, rounds=args.rounds,
                            calibration_data=args.calibration_data, progress=progress)
    write_device(device, args.output)
    print(f"wrote {args.output}: {device.name}, fitted on {device.residual_summary()}")


def add_arguments(sub) -> None:
    """Add the ``latency`` command group to the ``mobilenets`` subparsers ``sub``."""
    from mobilenets.cost.latency import FORMS
    from mobilenets.deploy.device import DEFAULT_KIT_SIZE

    arch_choices = sorted({*ARCH_ALIASES, *ARCHS})
    group = add_parser(sub, "latency", help="latency on the device you ship to: a calibration "
                       "kit, a per-layer model fitted to its timings there, predictions")
    cmds = group.add_subparsers(dest="latency_command", required=True, metavar="COMMAND")

    s = add_parser(cmds, "kit", help="the few models that calibrate a device best, exported, "
                   "with the command that times each there")
    s.add_argument("--backend", required=True, help="the runtime and precision of the device: "
                   "litert, litert-int8, executorch, executorch-int8, onnx, int8, openvino...")
    s.add_argument("--arch", choices=arch_choices, help="the architecture whose variants the "
                   "kit holds (default: v1; its coefficients carry over to v2 and ShuffleNet)")
    s.add_argument("--count", type=int, default=DEFAULT_KIT_SIZE,
                   help="models in the kit (at least 2; more fits more coefficients)")
    s.add_argument("--threads", type=int, default=1, help="threads the commands ask for")
    s.add_argument("--calibration-data", default="fashion-mnist",
                   help="int8: calibration images (latency does not depend on them)")
    s.add_argument("--output", dest="output_dir", required=True, metavar="DIR",
                   help="the folder to write (must not exist)")
    s.set_defaults(func=cmd_kit)

    s = add_parser(cmds, "fit", help="fit a device's latency coefficients to timings made "
                   "there")
    s.add_argument("measurements", nargs="+", metavar="MEASUREMENTS",
                   help="CSV files (columns model, latency_ms; optionally backend, threads) or "
                   "the saved output of benchmark_model or executor_runner for a kit's files")
    s.add_argument("--output", required=True, metavar="DEVICE.json",
                   help="the device file to write")
    s.add_argument("--backend", help="keep only this backend's measurements; sets the "
                   "precision (default: the one the measurements name, else fp32)")
    s.add_argument("--form", choices=tuple(FORMS), default="auto", help="the latency model: "
                   "auto (per-layer terms, as many as the models measured allow), or the "
                   "Mult-Adds predictors to compare with")
    s.add_argument("--name", help="what the device is called (default: the first file's name)")
    s.set_defaults(func=cmd_fit)

    s = add_parser(cmds, "predict", help="the predicted latency of every variant on a fitted "
                   "device")
    s.add_argument("device", metavar="DEVICE.json", help="written by `latency fit` or "
                   "`latency measure`")
    s.add_argument("--arch", choices=arch_choices, help="every registered variant of this "
                   "architecture (default: the one the device was fitted on)")
    s.add_argument("--model", action="append", metavar="NAME", help="a registered name, an "
                   "unregistered grid point (mobilenet_v1_0.6_200) or our .safetensors file "
                   "(repeatable; default: every variant of --arch)")
    add_output_arguments(s, FORMATS)
    s.set_defaults(func=cmd_predict)

    s = add_parser(cmds, "measure", help="time the kit on this machine and fit: this machine "
                   "as a device")
    s.add_argument("--backend", required=True, help="a backend of `mobilenets bench`")
    s.add_argument("--output", required=True, metavar="DEVICE.json",
                   help="the device file to write")
    s.add_argument("--arch", choices=arch_choices, help="the kit's architecture (default: v1)")
    s.add_argument("--count", type=int, default=DEFAULT_KIT_SIZE, help="models timed")
    s.add_argument("--threads", type=int, default=1, help="threads of the backend")
    s.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    s.add_argument("--calibration-data", default="fashion-mnist",
                   help="int8: calibration images (latency does not depend on them)")
    s.set_defaults(func=cmd_measure)
