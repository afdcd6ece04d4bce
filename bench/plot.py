#!/usr/bin/env python3
"""Charts from a bench run's CSV files.

Usage: python3 bench/plot.py [RESULTS_DIR]    (default: bench/results/latest)

Writes PNG files next to the CSVs:
  fanout_latency.png      p50/p99 send-to-receive latency against deliveries per second
  idle_memory.png         server memory against idle connections
  persistence_lag.png     send-to-stored lag p99 against offered messages per second
  auth_probes.png         probe p99 with and without logins saturating bcrypt

matplotlib comes from PyPI into a virtual environment under .local/bench-venv (git-ignored),
created on first use; the script re-runs itself there.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".local" / "bench-venv"
REQUIREMENT = "matplotlib==3.11.2"

COLORS = {"ours": "#1f77b4", "ours-2gw": "#2ca02c", "peer": "#d62728"}


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        sys.exit("matplotlib is missing from the bench venv; remove .local/bench-venv and retry")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", REQUIREMENT],
        check=True,
    )
    os.execv(str(python), [str(python), *sys.argv])


def read(directory, name):
    path = directory / f"{name}.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def by_target(rows):
    targets = {}
    for row in rows:
        targets.setdefault(row["target"], []).append(row)
    return targets


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def figure(plt, title):
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=90)
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def finish_log_log(ax, xlabel, ylabel, limit, limit_label):
    """Log axes, the limit the scenario judges against as a dotted line, labels, legend."""
    ax.axhline(limit, color="grey", linestyle=":", label=limit_label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def fanout(plt, directory):
    rows = read(directory, "fanout")
    if not rows:
        return
    fig, ax = figure(plt, "Room fan-out: latency vs delivery rate")
    for target, points in by_target(rows).items():
        points = [p for p in points if number(p["delivered"]) > 0]
        x = [number(p["deliveries_per_s"]) for p in points]
        color = COLORS.get(target)
        ax.plot(x, [number(p["p99"]) for p in points], "o-", color=color, label=f"{target} p99")
        ax.plot(x, [number(p["p50"]) for p in points], "x--", color=color, alpha=0.6,
                label=f"{target} p50")
    finish_log_log(ax, "deliveries per second (to other members)", "send-to-receive latency (ms)",
                   250, "250 ms")
    save(fig, directory / "fanout_latency.png")


def idle(plt, directory):
    rows = read(directory, "idle")
    if not rows:
        return
    fig, ax = figure(plt, "Idle connections: server memory")
    for target, points in by_target(rows).items():
        x = [number(p["open"]) for p in points]
        growth = [number(p["server_rss_mib"]) - number(p["baseline_rss_mib"]) for p in points]
        ax.plot(x, growth, "o-", color=COLORS.get(target), label=target)
        last = points[-1]
        ax.annotate(f'{number(last["kib_per_connection"]):.1f} KiB/conn',
                    (x[-1], growth[-1]), textcoords="offset points", xytext=(-80, 6), fontsize=8)
    ax.set_xlabel("open idle connections")
    ax.set_ylabel("RSS growth over the idle server (MiB)")
    ax.legend(fontsize=8)
    save(fig, directory / "idle_memory.png")


def persistence(plt, directory):
    rows = read(directory, "persistence")
    if not rows:
        return
    fig, ax = figure(plt, "Persistence: send-to-stored lag vs offered rate")
    for target, points in by_target(rows).items():
        x = [number(p["offered_per_s"]) for p in points]
        ax.plot(x, [number(p["lag_p99"]) for p in points], "o-", color=COLORS.get(target),
                label=f"{target} lag p99")
    finish_log_log(ax, "messages per second sent", "lag p99 (ms)", 1000, "1 s")
    save(fig, directory / "persistence_lag.png")


def auth(plt, directory):
    rows = read(directory, "auth")
    if not rows:
        return
    fig, ax = figure(plt, "Auth: probe p99 without and with login load")
    labels, health, me = [], [], []
    for row in rows:
        labels.append(f'{row["target"]}\n{row["phase"]}')
        health.append(number(row["health_p99"]))
        me.append(number(row["me_p99"]))
    positions = range(len(labels))
    width = 0.4
    ax.bar([p - width / 2 for p in positions], health, width, label="/health/live p99")
    ax.bar([p + width / 2 for p in positions], me, width, label="/api/auth/me p99")
    ax.set_xticks(list(positions))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    save(fig, directory / "auth_probes.png")


def main():
    ensure_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench" / "results" / "latest"
    if not directory.is_dir():
        sys.exit(f"no results directory {directory}")
    for chart in (fanout, idle, persistence, auth):
        chart(plt, directory)


if __name__ == "__main__":
    main()
