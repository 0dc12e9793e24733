"""Report from results/: the paper's Table 5 (and Tables 6 and 8) beside ours, Figure 2, robustness curves against eps.

    python tools/report.py [--results-dir results] [--robustness] [--readme]

Writes <results-dir>/table5.md, <results-dir>/<env-id>/figure2.png and evals_{off,on}_policy.png (the
deterministic policy's evaluations of evals.csv, natural and under MC, against env steps), with --robustness
(re-evaluates every saved model.pt under MC at eps from 0 to 2x the env's eps, cached per run in robustness.json)
<results-dir>/<env-id>/robustness.png, and with --readme the results tables of README.md.
"""

import csv
import glob
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

from sweep import METHODS  # noqa: E402  (tools/ is this script's folder, so on its path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
README_START, README_END = "<!-- results: written by python tools/report.py --readme -->", "<!-- end of results -->"

# SAFER at other bounds xi_adv: Table 7's rows, kept out of Table 5's tables and the figures
XI_SWEEP = [method for method in METHODS if method.startswith("safer_xi")]
METHOD_ORDER = [method for method in METHODS if method not in XI_SWEEP]
LABELS = {method: label for method, (_, _, label) in METHODS.items()}
SETTINGS = ("none", "mc", "mr")
# one colour per method in every plot (tab10 has only 10); on-policy methods dashed
COLORS = dict(zip(METHOD_ORDER, [plt.get_cmap("tab10")(i) for i in range(10)] + ["black", "darkblue", "olive"]))
ON_POLICY = {method for method, (script, _, _) in METHODS.items() if "ppol" in script}
COST_LIMIT = 5.0


def style(method):
    return dict(color=COLORS[method], linestyle="--" if method in ON_POLICY else "-", label=LABELS[method])


def label_ends(ax, ends, fontsize, offset):
    """Each method's name at its curve's end, {method: (x, y)}: a dozen curves are not read from a legend. Ends
    closer than a line of text are nudged apart upwards, or two names print on top of each other."""
    ax.get_ylim()  # settle the autoscaled limits before reading the data-to-display transform
    points_per_pixel = 72 / ax.figure.dpi
    heights = {m: ax.transData.transform(xy)[1] * points_per_pixel for m, xy in ends.items()}
    previous = -np.inf
    for method in sorted(ends, key=heights.get):
        placed = max(heights[method], previous + 1.2 * fontsize)
        ax.annotate(LABELS[method], ends[method], color=COLORS[method], fontsize=fontsize,
                    xytext=(offset, placed - heights[method]), textcoords="offset points", va="center")
        previous = placed

# The paper's Table 5, Table 6 for ADV-EM-CVPO and Table 8 for the SAFER ablations (means over 50 episodes and
# 5 seeds): reward, cost for natural, MC, MR.
PAPER_TABLES = {
    "SafetyCarCircle-v0": {
        "safer": (258.63, 0.0, 313.61, 0.1, 333.29, 0.32),
        "cvpo": (297.2, 0.38, 244.4, 57.21, 287.4, 38.75),
        "cvpo_random": (170.33, 0.0, 166.5, 7.51, 214.61, 2.3),
        "adv_cvpo": (0.42, 0.0, 0.48, 0.0, 0.57, 0.0),
        "adv_em_cvpo": (19.06, 17.3, 19.85, 7.74, 22.75, 17.01),
        "sa_ppol": (440.79, 0.25, 275.01, 71.62, 393.56, 96.4),
        "sa_ppol_mc": (439.44, 0.35, 348.21, 91.88, 375.59, 56.22),
        "adv_ppol": (300.0, 0.0, 338.79, 0.28, 281.64, 0.47),
        "safer_no_vm": (9.06, 0.0, 10.98, 5.37, 14.06, 2.25),
        "safer_no_kl": (373.56, 0.0, 313.82, 48.43, 395.2, 22.15),
        "safer_no_mle": (244.5, 0.0, 283.61, 3.0, 323.07, 2.97),
    },
    "SafetyBallCircle-v0": {
        "safer": (610.03, 0.0, 625.93, 0.47, 661.22, 1.99),
        "cvpo": (622.47, 0.0, 556.08, 20.91, 709.5, 44.82),
        "cvpo_random": (548.16, 0.0, 546.75, 7.06, 647.34, 29.99),
        "adv_cvpo": (4.35, 0.0, 14.39, 0.0, 13.94, 0.11),
        "adv_em_cvpo": (296.18, 17.41, 307.12, 28.6, 353.38, 33.02),
        "sa_ppol": (705.52, 2.82, 688.24, 48.48, 760.64, 55.83),
        "sa_ppol_mc": (681.98, 3.07, 659.13, 42.53, 726.58, 46.38),
        "adv_ppol": (467.54, 0.0, 666.74, 2.1, 447.53, 1.38),
        "safer_no_vm": (136.91, 0.0, 160.28, 0.0, 198.37, 0.0),
        "safer_no_kl": (507.61, 3.13, 524.19, 7.45, 602.17, 6.73),
        "safer_no_mle": (488.13, 0.0, 536.5, 0.55, 583.31, 3.15),
    },
}
PAPER_TABLES["SafetyDroneRun-v0"] = {
    "safer": (193.26, 0.0, 210.99, 0.63, 220.17, 0.68),
    "cvpo": (347.17, 0.0, 353.62, 63.52, 387.82, 71.28),
    "cvpo_random": (284.98, 0.0, 300.0, 40.63, 337.03, 72.32),
    "adv_cvpo": (222.7, 38.0, 309.14, 63.35, 285.16, 56.75),
    "adv_em_cvpo": (259.56, 22.15, 299.59, 52.3, 306.4, 47.25),
    "sa_ppol": (338.07, 0.0, -72.72, 59.27, 258.35, 69.97),
    "sa_ppol_mc": (183.9, 0.0, 206.77, 5.1, 214.32, 5.25),
    "adv_ppol": (265.84, 0.0, 298.7, 1.5, 264.37, 0.55),
    "safer_no_vm": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "safer_no_kl": (75.96, 0.0, 98.85, 0.0, 100.19, 0.0),
    "safer_no_mle": (157.96, 0.0, 178.41, 0.52, 180.33, 1.02),
}
PAPER_TABLES["SafetyAntRun-v0"] = {
    "safer": (496.11, 0.17, 514.8, 0.82, 555.81, 1.5),
    "cvpo": (686.59, 0.85, 668.53, 86.03, 728.37, 164.65),
    "cvpo_random": (682.28, 1.17, 672.27, 100.5, 747.65, 173.45),
    "adv_cvpo": (334.31, 79.08, 302.15, 75.02, 330.5, 68.3),
    "adv_em_cvpo": (503.31, 13.35, 500.01, 26.83, 541.88, 8.45),
    "sa_ppol": (699.78, 1.47, 692.34, 62.2, 714.38, 103.63),
    "sa_ppol_mc": (547.23, 1.03, 575.58, 25.65, 584.42, 28.35),
    "adv_ppol": (608.02, 0.0, 668.25, 0.55, 672.79, 1.32),
    "safer_no_vm": (37.64, 0.0, 48.12, 0.18, 51.98, 0.0),
    "safer_no_kl": (107.44, 1.78, 173.11, 0.63, 158.74, 2.32),
    "safer_no_mle": (175.11, 0.42, 178.46, 0.38, 183.44, 0.75),
}
# SA-PPOL's row stands beside both SA-PPOL (MAD, as the paper writes it) and SA-PPOL(corner) (random corners, what
# the authors' code trained against)
for _table in PAPER_TABLES.values():
    _table["sa_ppol_corner"] = _table["sa_ppol"]


# The paper's Table 7: worst case over MC and MR (reward, cost) of SAFER per bound xi_adv (50 episodes, 5 seeds)
PAPER_TABLE7 = {
    "SafetyCarCircle-v0": {0.01: (244.77, 0.0), 0.02: (379.82, 0.65), 0.03: (357.11, 2.9), 0.05: (328.98, 4.97),
                           0.09: (332.82, 5.76)},
    "SafetyBallCircle-v0": {0.03: (537.27, 1.7), 0.05: (552.51, 1.72), 0.07: (638.43, 2.53), 0.09: (567.85, 3.82),
                            0.11: (695.89, 5.35)},
    "SafetyAntRun-v0": {0.05: (563.61, 0.15), 0.07: (572.12, 4.0), 0.09: (584.53, 6.42), 0.11: (531.37, 7.63),
                        0.12: (585.7, 12.02)},
}


@dataclass
class Args:
    results_dir: str = "results"
    """root of results/<env-id>/<method>/seed<N>/"""
    readme: bool = False
    """also rewrite the results tables of README.md (between its two results markers)"""
    robustness: bool = False
    """re-evaluate saved checkpoints under MC at eps from 0 to 2x the env's eps (slow; cached per run)"""
    robustness_points: int = 5
    """eps values from 0 to 2x eps"""
    robustness_episodes: int = 10
    """episodes per eps value"""
    robustness_attack_steps: int = 200
    """MC attack steps of the re-evaluation"""


def seed_dirs(results_dir, env_id, method):
    """Finished runs only (eval.json written), so a sweep still training is in no table or figure."""
    pattern = os.path.join(results_dir, env_id, method, "seed*", "eval.json")
    return sorted(os.path.dirname(p) for p in glob.glob(pattern))


PROTOCOLS = {"final": "eval.json", "selected": "selected.json"}  # the last iterate; tools/select_iterate.py's choice


def seed_values(run_dir, protocol="final"):
    """(reward, cost) per setting and their average over the settings, from one run's eval.json (final) or
    selected.json (selected); None if the file or a setting is missing."""
    path = os.path.join(run_dir, PROTOCOLS[protocol])
    if not os.path.isfile(path):
        return None
    results = json.load(open(path))["results"]
    if any(s not in results for s in SETTINGS):
        return None
    values = [(results[s]["return_mean"], results[s]["cost_mean"]) for s in SETTINGS]
    values.append((np.mean([v[0] for v in values]), np.mean([v[1] for v in values])))
    return np.array(values)  # (4 settings incl. average, 2)


def env_ids(results_dir):
    """The env folders of results_dir; experiments/ holds one-off runs, kept apart from the tables and figures."""
    return sorted(os.path.basename(d) for d in glob.glob(os.path.join(results_dir, "*"))
                  if os.path.isdir(d) and os.path.basename(d) != "experiments")


def table(results_dir, protocol="final"):
    """Per env and method: mean and std over seeds of (reward, cost) for natural, MC, MR and their average, of the
    final iterates or of the selected ones (the seeds that have a selected.json)."""
    out = {}
    for env_id in env_ids(results_dir):
        for method in METHOD_ORDER:
            runs = [v for v in (seed_values(d, protocol) for d in seed_dirs(results_dir, env_id, method))
                    if v is not None]
            if runs:
                runs = np.stack(runs)
                out.setdefault(env_id, {})[method] = (runs.mean(0), runs.std(0), len(runs))
    return out


def worst_case(results):
    """(reward, cost) under whichever of MC and MR gives the higher mean cost (eval.json's results): Table 7's worst
    case."""
    attacker = max(("mc", "mr"), key=lambda a: results[a]["cost_mean"])
    return results[attacker]["return_mean"], results[attacker]["cost_mean"]


def table7(results_dir):
    """Per env: {xi_adv: (mean, std over seeds of the worst case (reward, cost), seeds)} of SAFER and its runs at
    other bounds, xi_adv read from each run's arguments."""
    out = {}
    for env_id in env_ids(results_dir):
        per_xi = {}
        for method in ["safer", *XI_SWEEP]:
            for run_dir in seed_dirs(results_dir, env_id, method):
                record = json.load(open(os.path.join(run_dir, "eval.json")))
                if {"mc", "mr"} <= set(record["results"]) and "xi_adv" in record.get("args", {}):
                    per_xi.setdefault(record["args"]["xi_adv"], []).append(worst_case(record["results"]))
        if per_xi:
            out[env_id] = {xi: (np.mean(v, 0), np.std(v, 0), len(v)) for xi, v in sorted(per_xi.items())}
    return out


def table7_lines(env_id, rows):
    paper = PAPER_TABLE7.get(env_id, {})
    lines = [f"**Table 7, {env_id}**: SAFER's worst case over MC and MR (the attacker with the higher cost) per "
             "bound xi_adv of eq. (8), paper in brackets", "", "| xi_adv | seeds | worst-case reward / cost |",
             "|---|---|---|"]
    for xi, (mean, std, n) in rows.items():
        cell = f"{mean[0]:.1f} +- {std[0]:.1f} / {mean[1]:.2f} +- {std[1]:.2f}"
        if xi in paper:
            cell += f" [{paper[xi][0]:.1f} / {paper[xi][1]:.2f}]"
        lines.append(f"| {xi:g} | {n} | {cell} |")
    return lines + [""]


def markdown(stats, selected=None):
    """Table 5 per env; below a method's row of final iterates, its row of selected iterates where it has one."""
    selected = selected or {}
    lines = ["Mean +- std over seeds of each run's mean episodic reward / cost; paper (Table 5; Table 6 for "
             "ADV-EM-CVPO; Table 8 for the SAFER ablations) in brackets. \"selected\": the iterate the authors' rule "
             "picks from the evaluations during training, evaluated again on fresh episodes (tools/select_iterate.py).",
             ""]
    header = "| method | seeds | natural | MC | MR | average |"
    for env_id, methods in stats.items():
        lines += [f"### {env_id}", "", header, "|---|---|---|---|---|---|"]
        paper = PAPER_TABLES.get(env_id, {})
        for method, (mean, std, n) in methods.items():
            cells = []
            for i in range(4):
                cell = f"{mean[i, 0]:.1f}+-{std[i, 0]:.1f} / {mean[i, 1]:.2f}+-{std[i, 1]:.2f}"
                if method in paper:
                    p = paper[method]
                    ref = (p[2 * i], p[2 * i + 1]) if i < 3 else (np.mean(p[0::2]), np.mean(p[1::2]))
                    cell += f" [{ref[0]:.1f} / {ref[1]:.2f}]"
                cells.append(cell)
            lines.append(f"| {LABELS[method]} | {n} | " + " | ".join(cells) + " |")
            if method in selected.get(env_id, {}):
                mean_s, std_s, n_s = selected[env_id][method]
                lines.append(f"| {LABELS[method]}, selected | {n_s} | " + " | ".join(
                    f"{mean_s[i, 0]:.1f}+-{std_s[i, 0]:.1f} / {mean_s[i, 1]:.2f}+-{std_s[i, 1]:.2f}" for i in range(4))
                    + " |")
        lines.append("")
        lines += [line for line in orderings(methods, paper)] + [""]
    return "\n".join(lines)


def markdown_table7(rows_per_env):
    return "".join("\n" + "\n".join(table7_lines(env_id, rows)) + "\n" for env_id, rows in rows_per_env.items())


def orderings(methods, paper):
    """Per family, its rows ranked by worst-case cost under attack (the larger of the MC and MR means), lowest
    first, ours beside the paper's ranking of the same methods: whether the paper's ordering holds here."""
    for family, members in (("Off-policy", [m for m in methods if m not in ON_POLICY]),
                            ("On-policy", [m for m in methods if m in ON_POLICY])):
        shared = [m for m in members if m in paper]
        if len(shared) < 2:
            continue
        ours = {m: max(methods[m][0][1, 1], methods[m][0][2, 1]) for m in shared}
        theirs = {m: max(paper[m][3], paper[m][5]) for m in shared}

        def rank(worst):
            return " < ".join(f"{LABELS[m]} ({worst[m]:.2f})" for m in sorted(shared, key=worst.get))

        yield (f"{family} rows by worst-case attacked cost, lowest first: ours {rank(ours)}; paper {rank(theirs)}"
               + ("; the same order." if sorted(shared, key=ours.get) == sorted(shared, key=theirs.get)
                  else "; the order differs."))


def readme_tables(stats, selected=None):
    """One compact table per env for the README: the mean over seeds of reward / cost per setting (the spread over
    seeds is in table5.md), the paper's figure in brackets, and in bold the cells whose mean cost is within the
    limit; a method's selected iterates in a row below its final ones, where it has them."""
    selected, lines = selected or {}, []

    def cell(mean, i, paper=None):
        text = f"{mean[i, 0]:.0f} / {mean[i, 1]:.2f}"
        text = f"**{text}**" if mean[i, 1] <= COST_LIMIT else text
        return text + (f" [{paper[2 * i]:.0f} / {paper[2 * i + 1]:.2f}]" if paper is not None else "")

    for env_id, methods in stats.items():
        lines += [f"**{env_id}**", "", "| method | seeds | natural | MC | MR |", "|---|---|---|---|---|"]
        paper = PAPER_TABLES.get(env_id, {})
        for method, (mean, _, n) in methods.items():
            lines.append(f"| {LABELS[method]} | {n} | " + " | ".join(cell(mean, i, paper.get(method))
                                                                     for i in range(3)) + " |")
            if method in selected.get(env_id, {}):
                mean_s, _, n_s = selected[env_id][method]
                lines.append(f"| {LABELS[method]}, selected | {n_s} | " + " | ".join(cell(mean_s, i)
                                                                                   for i in range(3)) + " |")
        lines.append("")
    return "\n".join(lines)


def write_readme_tables(tables, path):
    """Replace what lies between README's results markers by `tables` (markdown), atomically."""
    text = open(path).read()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"report.py: error: {path!r} has no results markers ({README_START} ... {README_END})")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    with open(path + ".tmp", "w") as f:
        f.write(f"{head}{README_START}\n{tables}{README_END}{tail}")
    os.replace(path + ".tmp", path)


def save_figure(fig, path, dpi):
    """Written whole or not at all."""
    fig.savefig(path + ".tmp.png", dpi=dpi)
    os.replace(path + ".tmp.png", path)


def evaluations(run_dir, attacker):
    """(env steps, reward, cost) of a run's evaluations under `attacker` from its evals.csv; None without any."""
    path = os.path.join(run_dir, "evals.csv")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["attacker"] == attacker]
    if not rows:
        return None
    return tuple(np.array([float(r[key]) for r in rows]) for key in ("global_step", "return_mean", "cost_mean"))


def evaluation_curves(results_dir, env_id, methods, path):
    """The deterministic policy's evaluation reward and cost against env steps, natural and under MC: per method the
    mean over seeds and, shaded, their range, at the evaluations all its seeds made. False if nothing to draw."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    drawn = False
    for method in methods:
        for col, attacker in enumerate(("none", "mc")):
            runs = [e for e in (evaluations(d, attacker) for d in seed_dirs(results_dir, env_id, method)) if e]
            if not runs:
                continue
            shared = min(len(run[0]) for run in runs)
            steps = runs[0][0][:shared]
            for row, index in ((0, 1), (1, 2)):
                values = np.stack([run[index][:shared] for run in runs])
                axes[row, col].plot(steps, values.mean(0), marker=".", markersize=3, **style(method))
                axes[row, col].fill_between(steps, values.min(0), values.max(0), color=COLORS[method], alpha=0.12)
            drawn = True
    if drawn:
        for col, name in enumerate(("natural", "under MC")):
            axes[0, col].set_title(f"evaluation {name}")
            axes[1, col].axhline(COST_LIMIT, color="grey", linestyle=":", linewidth=1, label="cost limit")
            axes[1, col].set_xlabel("env steps")
            axes[1, col].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        axes[0, 0].set_ylabel("deterministic reward")
        axes[1, 0].set_ylabel("cost")
        axes[1, 1].legend(fontsize=7)
        fig.suptitle(f"{env_id}: evaluations during training (mean over seeds, range shaded)")
        fig.tight_layout()
        save_figure(fig, path, 100)
    plt.close(fig)
    return drawn


def progress(run_dir):
    """(cumulative cost, max return so far) per epoch of a run listed by seed_dirs; None without progress.csv."""
    path = os.path.join(run_dir, "progress.csv")
    if not os.path.exists(path):
        return None
    data = np.genfromtxt(path, delimiter=",", names=True)
    data = np.atleast_1d(data)
    ret = np.nan_to_num(data["episodic_return"], nan=-np.inf)
    return data["cumulative_cost"], np.maximum.accumulate(ret)


def figure2(results_dir, env_id, path):
    """Max episodic reward so far against cumulative training cost (log x), mean over seeds, per method. False if
    no method has a finished run."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ends = {}
    for method in METHOD_ORDER:
        curves = [c for c in (progress(d) for d in seed_dirs(results_dir, env_id, method)) if c is not None]
        curves = [(x, y) for x, y in curves if np.isfinite(y).any() and x.max() > 0]
        if not curves:
            continue
        grid = np.logspace(np.log10(max(1.0, min(x[x > 0].min() for x, _ in curves))),
                           np.log10(min(x.max() for x, _ in curves)), 100)
        ys = np.mean([np.interp(grid, x, np.where(np.isfinite(y), y, np.nan)) for x, y in curves], axis=0)
        ax.plot(grid, ys, **style(method))
        ends[method] = grid[-1], ys[-1]
    if not ends:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    label_ends(ax, ends, fontsize=8, offset=3)
    ax.set_xlabel("cumulative training cost")
    ax.set_ylabel("max episodic reward so far")
    ax.set_title(f"{env_id}: reward reached against cost paid in training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, 120)
    plt.close(fig)
    return True


def robustness_values(run_dir, args):
    """{eps: (reward, cost)} under MC for one run, re-evaluating its model.pt where not cached."""
    cache_path = os.path.join(run_dir, "robustness.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    ckpt_path = os.path.join(run_dir, "model.pt")
    record = json.load(open(os.path.join(run_dir, "eval.json")))
    eps_values = np.linspace(0, 2 * record["eps"], args.robustness_points)
    for eps in eps_values:
        key = f"{eps:.6g}"
        if key in cache or not os.path.exists(ckpt_path):
            continue
        out = os.path.join(run_dir, "robustness_eval.tmp.json")
        subprocess.run([sys.executable, os.path.join(ROOT, f"{record['algo']}.py"), "--eval-checkpoint", ckpt_path,
                        "--eps", str(eps), "--eval-attackers", "mc", "--eval-episodes",
                        str(args.robustness_episodes), "--attack-steps", str(args.robustness_attack_steps),
                        "--eval-output", out], check=True, capture_output=True)
        r = json.load(open(out))["results"]["mc"]
        os.remove(out)
        cache[key] = (r["return_mean"], r["cost_mean"])
        tmp = cache_path + ".tmp"
        json.dump(cache, open(tmp, "w"), indent=2)
        os.replace(tmp, cache_path)
    return {float(k): v for k, v in cache.items()}


def robustness_plot(results_dir, env_id, args, path):
    """Writes the plot and returns True, or returns False when no run of env_id has a checkpoint or a cache."""
    curves = {}
    for method in METHOD_ORDER:
        per_seed = [robustness_values(d, args) for d in seed_dirs(results_dir, env_id, method)]
        per_seed = [p for p in per_seed if p]
        if per_seed:
            eps = sorted(set.intersection(*(set(p) for p in per_seed)))
            curves[method] = eps, np.array([[p[e] for e in eps] for p in per_seed]).mean(0)
    if not curves:
        return False
    fig, (ax_cost, ax_ret) = plt.subplots(1, 2, figsize=(13, 5))
    for method, (eps, values) in curves.items():
        for ax, column in ((ax_ret, 0), (ax_cost, 1)):
            ax.plot(eps, values[:, column], marker="o", **style(method))
    ax_cost.axhline(5, color="grey", linestyle="--", linewidth=1, label="cost limit")
    eps_max = max(e[-1] for e, _ in curves.values())
    for ax, name in ((ax_cost, "episodic cost"), (ax_ret, "episodic reward")):
        ax.set_xlabel("MC attack budget eps")
        ax.set_ylabel(name)
        ax.set_xlim(right=eps_max * 1.3)  # room for the end labels
    for ax, column in ((ax_ret, 0), (ax_cost, 1)):
        label_ends(ax, {method: (eps[-1], values[-1, column]) for method, (eps, values) in curves.items()},
                   fontsize=7, offset=4)
    ax_cost.legend(fontsize=7)  # the reward panel's curves are labelled at their ends
    fig.suptitle(f"{env_id}: robustness under the MC attacker")
    fig.tight_layout()
    save_figure(fig, path, 120)
    plt.close(fig)
    return True


def main(args):
    if not os.path.isdir(args.results_dir):
        raise SystemExit(f"report.py: error: results directory {args.results_dir!r} does not exist")
    stats, xi_rows = table(args.results_dir), table7(args.results_dir)
    selected = table(args.results_dir, "selected")
    out = os.path.join(args.results_dir, "table5.md")
    with open(out + ".tmp", "w") as f:
        f.write(markdown(stats, selected) + markdown_table7(xi_rows))
    os.replace(out + ".tmp", out)
    print(f"wrote {out}")
    if args.readme:
        write_readme_tables(readme_tables(stats, selected) + markdown_table7(xi_rows), README)
        print(f"wrote the results tables of {README}")
    # every env folder, also one whose runs all went to experiments/: its figures must not outlive their data
    for env_id in env_ids(args.results_dir):
        figures = [("figure2.png", lambda path: figure2(args.results_dir, env_id, path))]
        for family, methods in (("off_policy", [m for m in METHOD_ORDER if m not in ON_POLICY]),
                                ("on_policy", [m for m in METHOD_ORDER if m in ON_POLICY])):
            figures.append((f"evals_{family}.png",
                            lambda path, methods=methods: evaluation_curves(args.results_dir, env_id, methods, path)))
        if args.robustness:
            figures.append(("robustness.png", lambda path: robustness_plot(args.results_dir, env_id, args, path)))
        for name, draw in figures:
            path = os.path.join(args.results_dir, env_id, name)
            if draw(path):
                print(f"wrote {path}")
            elif os.path.exists(path):
                os.remove(path)
                print(f"removed {path}: no finished run of {env_id} to draw it from")
            elif name == "robustness.png":
                print(f"skipped {path}: no run of {env_id} has a model.pt or a robustness.json")


if __name__ == "__main__":
    main(tyro.cli(Args))
