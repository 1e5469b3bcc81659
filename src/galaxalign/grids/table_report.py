"""report.md of a run table (demo or ablations), rendered from its report.json alone.

``render_report(report)`` takes the dict ``runner.run_table`` writes (or ``json.load`` of the file),
so a report can be re-rendered, or rendered differently, without training anything:
``render_report_file("runs/demo/report.json")``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from galaxalign.evaluation.comparison import groups
from galaxalign.evaluation.report import fmt, markdown_table

METRICS = ("accuracy", "macro_f1", "map", "map_at_10", "precision_at_10")
METRIC_HEADERS = ("accuracy", "macro-F1", "mAP", "mAP@10", "P@10")


def render_report_file(path: str | Path) -> str:
    return render_report(json.loads(Path(path).read_text()))


def render_report(report: dict) -> str:
    if report.get("kind") == "galaxalign-ablations":
        return ablation_markdown(report)
    return demo_markdown(report)


def _several_seeds(runs: Sequence[dict]) -> bool:
    return len({r.get("seed", 0) for r in runs}) > 1


def _runs_table(runs: list[dict]) -> str:
    seeds = _several_seeds(runs)
    rows = []
    for r in runs:
        # the grid's run name: two runs of one method (class-level and per-galaxy GalaxAlign) stay apart
        first = [r.get("run", r["method"]), f"{r['label_fraction']:g}", *([str(r.get("seed", 0))] if seeds else [])]
        rows.append([*first, *(fmt(r[m], r.get(f"{m}_ci")) for m in METRICS), f"{r['train_seconds']:.0f}"])
    headers = ["run", "label fraction", *(["seed"] if seeds else []), *METRIC_HEADERS, "train s"]
    return markdown_table(headers, rows)


def _classifier_table(runs: list[dict]) -> str:
    names: list[str] = []
    for r in runs:
        names += [n for n in r["classifiers"] if n not in names]
    rows = [[r.get("name", r["method"]), *(fmt(r["classifiers"].get(n, {}).get("accuracy")) for n in names)] for r in runs]
    return markdown_table(["run", *names], rows)


def _probe_line(runs: list[dict]) -> str:
    cs = [f"{r['name']} {r['probe']['C']:g}" for r in runs if (r.get("probe") or {}).get("C") is not None]
    on = {(r.get("probe") or {}).get("C_chosen_on") for r in runs if (r.get("probe") or {}).get("C") is not None}
    if not cs:
        return ""
    where = "on the validation split" if on == {"val"} else "(no validation split: C = 1)"
    return f"Linear probe: fitted on the labelled training galaxies, C chosen {where}: " + ", ".join(cs) + "."


def _verdict_section(report: dict) -> list[str]:
    lines = []
    for key, comp in (report.get("comparison") or {}).items():
        for metric, v in comp["verdict"].items():
            ci = f"[{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]"
            if v["beats_all"]:
                how = ("clearly: the paired 95 % interval of its difference to every other method lies above 0"
                       if v["clearly"] else "but the paired 95 % interval of the difference to at least one method "
                       "includes 0, so the difference is not established")
                lines.append(f"- Label fraction {key}, {metric}: GalaxAlign {v['reference']:.3f} beats the best other "
                             f"method ({v.get('best_other_run', v['best_other_method'])}, {v['best_other_value']:.3f}) by {v['advantage']:+.3f} "
                             f"{ci}, {how}.")
            else:
                lines.append(f"- Label fraction {key}, {metric}: **GalaxAlign ({v['reference']:.3f}) does not beat "
                             f"{v.get('best_other_run', v['best_other_method'])} ({v['best_other_value']:.3f}) on this data** (difference "
                             f"{v['advantage']:+.3f} {ci}, paired bootstrap).")
    return lines


def _why_section(report: dict) -> list[str]:
    runs = report["runs"]
    lines = _verdict_section(report)
    why = _embedding_vs_prototypes(runs)
    if why:
        lines += ["", "### Why (evidence from this run)", "", *why]
    ev = []
    for r in runs:
        if r["method"] in ("galaxalign", "image_text", "zero_shot"):
            c = r["classifiers"]
            parts = [f"{k.replace('zero_shot_', '')} {c[k]['accuracy']:.3f}"
                     for k in ("zero_shot_text", "zero_shot_symbol", "zero_shot_both", "linear_probe", "knn") if k in c]
            ev.append(f"- {r['name']}: " + ", ".join(parts))
    if ev:
        lines += ["", "Accuracy by classifier on the same embeddings (text / symbol / fused prototypes, linear probe, "
                  "k-NN) separates the quality of the image embedding (probe, k-NN) from the quality of the "
                  "label prototypes (text, symbol):", *ev]
    losses = [(r.get("name", r["method"]), r["final_losses"]) for r in runs if r.get("final_losses")]
    if losses:
        lines += ["", "Last training-step losses:"]
        lines += [f"- {n}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(l.items())) for n, l in losses]
    return lines


def _embedding_vs_prototypes(runs: list[dict]) -> list[str]:
    """Where a gap comes from: the image embedding (linear probe) or the label prototypes."""
    lines = []
    for key, members in groups(runs).items():
        at = {r["method"]: r for r in members}
        ga = at.get("galaxalign")
        probes = {m: r["classifiers"].get("linear_probe", {}).get("accuracy") for m, r in at.items() if m != "galaxalign"}
        probes = {m: v for m, v in probes.items() if v is not None}
        if not ga or "linear_probe" not in ga["classifiers"] or not probes:
            continue
        best = max(probes, key=probes.get)
        lp = ga["classifiers"]["linear_probe"]["accuracy"]
        lines.append(
            f"- Label fraction {key}: a linear probe on GalaxAlign's image embeddings reaches {lp:.3f} "
            f"(best other method: {best} {probes[best]:.3f}); its primary classifier reaches {ga['accuracy']:.3f}, "
            f"so {lp - ga['accuracy']:.3f} of accuracy is lost between what the image embedding separates and "
            "what the label prototypes recover."
        )
    return lines


def feature_search_section(report: dict) -> list[str]:
    """"Feature search nDCG@10 (symbol / text)": every run's figures with intervals over queries, the
    paired difference to the grid's reference and the verdict; then the real-exemplar ROC-AUCs."""
    runs = [r for r in report["runs"] if r.get("feature_search")]
    lines: list[str] = []
    if runs:
        fs = report.get("feature_search") or {}
        k = fs.get("k", runs[0]["feature_search"].get("k", 10))
        comparison = fs.get("comparison") or {}
        diff: dict = {}
        for comp in comparison.values():
            for name, per in comp["vs"].items():
                diff[name] = per
        ref_names = {comp["reference"] for comp in comparison.values()}
        rows = []
        for r in runs:
            f = r["feature_search"]
            cells = [r["name"], r["method"]]
            cells += [fmt(f[m]["ndcg"], f[m].get("ci")) for m in ("symbol", "text")]
            for m in ("symbol", "text"):
                d = (diff.get(r["name"]) or {}).get(m)
                cells.append("reference" if r["name"] in ref_names else
                             (f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d else "—"))
            rows.append(cells)
        ref = report.get("reference")
        first = runs[0]["feature_search"]
        lines += [f"## Feature search nDCG@{k} (symbol / text)", "",
                  f"{first['n_queries']} feature queries (decision-tree answer sets of 3-7 answers drawn with a fixed "
                  f"seed from the test galaxies' true paths), each asked as a composed symbol and as a caption in the "
                  f"volunteers' wording; the {first['n_pool']} test galaxies ranked as the search ranks them: by the "
                  "expected fraction of the query's answers under the model's posterior over the decision-tree paths "
                  "it was aligned with (times how many training galaxies had each, when the model records it), "
                  "through the symbol or the text encoder (`search.features`; the image-only "
                  "baseline: by its head's probability of the query's nearest class). Relevance = the "
                  "fraction of the query's answers a galaxy has. Brackets: 95 % bootstrap intervals over queries; the "
                  f"difference columns are `{ref}` minus the run, paired over the same queries."
                  + (f" A random ranking scores {first['chance']:.3f}." if first.get("chance") is not None else ""),
                  "",
                  markdown_table(["run", "method", f"symbol nDCG@{k}", f"text nDCG@{k}", f"{ref} − run (symbol)",
                                  f"{ref} − run (text)"], rows),
                  ""]
        if any("per_galaxy_paths" in r["feature_search"] for r in runs):
            per = [r for r in runs if r["feature_search"].get("per_galaxy_paths")]
            lines += ["Aligned per galaxy (the model carries its training paths): "
                      + (", ".join(f"{r['name']} ({r['feature_search']['per_galaxy_paths']} paths)" for r in per) or "none")
                      + "; every other run aligns with its classes' answers (a class-level method, `answers.per_galaxy` false, or `auto` "
                        "with fewer than 2 labelled galaxies per distinct path).", ""]
        composed = [r for r in runs if r["feature_search"].get("composed")]
        if composed:
            lines += ["Ranked instead by the cosine of each galaxy to the one composed query vector (symbol / text): "
                      + "; ".join(f"{r['name']} {fmt(r['feature_search']['composed']['symbol']['ndcg'])} / "
                                  f"{fmt(r['feature_search']['composed']['text']['ndcg'])}" for r in composed) + ".", ""]
        for key, comp in comparison.items():
            if comp.get("seeds") and comp.get("ndcg"):
                ref_name = comp["reference"]
                rows = [[name, fmt(v["symbol"]), fmt(v["text"])]
                        + (["reference", "reference"] if name == ref_name else
                           [f"{comp['vs'][name][m]['difference']:+.3f} [{comp['vs'][name][m]['ci'][0]:+.3f}, "
                            f"{comp['vs'][name][m]['ci'][1]:+.3f}]" for m in ("symbol", "text")])
                        for name, v in comp["ndcg"].items()]
                lines += [f"Label fraction {key}: each query's nDCG@{k} averaged over the training seeds, then "
                          "compared paired over the same queries:", "",
                          markdown_table(["run", f"symbol nDCG@{k}", f"text nDCG@{k}", f"{ref_name} − run (symbol)",
                                          f"{ref_name} − run (text)"], rows), ""]
        for key, comp in comparison.items():
            for m, v in comp["verdict"].items():
                ci = f"[{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]"
                how = ("clearly above every other run (paired 95 % interval of each difference above 0)" if v["clearly"]
                       else "above every other run, but not clearly (a paired interval includes 0)" if v["beats_all"]
                       else f"**not above every other run** (best other: {v['best_other']})")
                lines.append(f"- Label fraction {key}, {m} queries: {comp['reference']} {fmt(v['reference'])} vs best "
                             f"other {v['best_other']} {fmt(v['best_other_value'])} ({v['advantage']:+.3f} {ci}): {how}.")
        lines.append("")
    ex_runs = [r for r in report["runs"] if r.get("feature_exemplars")]
    if ex_runs:
        lines += ["### Real exemplars: one-answer queries (ROC-AUC)", "",
                  "For every answer with real exemplars, a symbol and a text query for that answer score every "
                  "exemplar; ROC-AUC of its exemplars against those of contradicting answers (0.5 = chance), mean "
                  "over answers with a 95 % bootstrap interval over answers; in parentheses against all other "
                  "exemplars.", ""]
        rows = []
        for r in ex_runs:
            for name, e in r["feature_exemplars"].items():
                rows.append([r["name"], name, str(e["n"]), str(e["symbol"].get("n_answers", e["n_answers"])),
                             *(f"{fmt(e[m]['auc'], e[m].get('ci'))} ({fmt(e[m].get('auc_all'))})" for m in ("symbol", "text"))])
        lines += [markdown_table(["run", "exemplars", "images", "answers scored", "symbol AUC", "text AUC"], rows), ""]
    return lines


def _data_name(ds: dict) -> str:
    """The data as a reader can find it: the embedded survey by its file name (it lives in the
    galaxalign cache, a path of the machine that ran it), any other source by its path."""
    return Path(str(ds.get("path"))).name if ds.get("source") == "survey" else str(ds.get("path"))


def _data_line(ds: dict) -> str:
    head = (f"Data: embedded synthetic survey `{_data_name(ds)}` (galaxalign cache; {ds.get('num')} galaxies, "
            f"{ds.get('size')} px, " if ds.get("source") == "survey" else f"Data: `{_data_name(ds)}` (")
    return head + f"taxonomy {ds.get('taxonomy')}); splits {ds.get('splits')} (seed {ds.get('split_seed')})."


def demo_markdown(report: dict) -> str:
    runs = report["runs"]
    b = report["budget"]
    seeds = report.get("seeds") or sorted({r.get("seed", 0) for r in runs})
    lines = [
        f"# {report.get('title', 'GalaxAlign reproduction table')}" + (" (quick)" if report.get("quick") else ""),
        "",
        _data_line(report["dataset"]),
        f"Backbone: {report['backbone']}.",
        (f"Budget: the training recipe (training/recipe.py) for every run: {b['recipe'].get('steps')} optimiser steps, "
         f"at most {b['recipe'].get('max_epochs')} epochs, frozen-trunk feature cache, best validation epoch per stage; "
         "each run's choices are in its config."
         if b.get("recipe") else
         f"Budget: GalaxAlign stage 1 {b['stage1_epochs']} + stage 2 {b['stage2_epochs']} epochs; single-stage "
         f"baselines {b['baseline_epochs']} epochs; batch {b['batch_size']}"
         + ("; at label fraction f < 1 every method gets 1/f times the epochs (equal optimiser steps)."
            if b.get("equal_steps_across_fractions") else "."))
        + f" Training seed(s): {', '.join(map(str, seeds))}.",
        "",
        "Classification: each run's primary classifier, the one with the best validation accuracy among its label "
        "prototypes, linear probe, k-NN, head and their fusion (zero-shot: among its prototypes only); named per run "
        "in report.json (`primary_classifier`). Search: every test galaxy queries the training split, "
        "relevant = same class. Brackets: 95 % bootstrap intervals over test galaxies (test-set noise only, not "
        "training seeds). Zero-shot is trained once and shown at every label fraction (same primary numbers).",
        "",
        _runs_table(runs),
        "",
        "## All classifiers (accuracy)",
        "",
        _classifier_table(runs),
        "",
        _probe_line(runs),
        "",
        "## Does GalaxAlign beat the baselines here?",
        "",
        "Differences are judged with a paired bootstrap: each resample draws one set of test galaxies and "
        "scores both methods on it; brackets are the 95 % interval of the difference.",
        "",
        *_why_section(report),
        "",
        *feature_search_section(report),
    ]
    s2r = report.get("sim_to_real")
    by_set = report.get("sim_to_real_by_set") or ({"exemplars": s2r} if s2r else {})
    lines += ["## Sim-to-real", ""]
    if by_set:
        for name, res in by_set.items():
            lines += [f"### {name}", "", *([f"Run: `{report['sim_to_real_run']}`.", ""] if report.get("sim_to_real_run") else []),
                      sim_to_real_markdown(res), ""]
    else:
        lines += ["Not run (pass the real labelled galaxies with `--exemplars`, e.g. ../shared/data/gz2-exemplars).", ""]
    lines += ["## Plots", ""]
    top = max((x["label_fraction"] for x in runs), default=None)
    for r in runs:
        if r["method"] == "galaxalign" and r["label_fraction"] == top:
            lines += [f"![{r['name']} {name}]({_rel(png, report)})" for name, png in r.get("plots", {}).items()]
            lines.append("")
    for r in runs:
        for name, png in r.get("plots", {}).items():
            lines.append(f"- {r.get('name', r['method'])} {name}: [{Path(png).name}]({_rel(png, report)})")
    lines += ["", "## Checkpoints", ""]
    lines += [f"- {r.get('name', r['method'])}: `{r['checkpoint']}`" for r in runs]
    t = report["timings"]
    lines += ["", "## Timings", "", f"Total {t.get('total_seconds', 0):.0f} s (data {t.get('data_seconds', 0):.0f} s).", ""]
    return "\n".join(lines) + "\n"


def sim_to_real_markdown(s2r: dict) -> str:
    """Headline numbers of the sim-to-real check (the full result is in report.json)."""
    head = (f"GalaxAlign (label fraction 1.0, trained on rendered galaxies) on {s2r.get('n', '?')} real "
            f"images from `{s2r.get('real_source', '?')}`: accuracy {fmt(s2r.get('accuracy'))}, macro-F1 "
            f"{fmt(s2r.get('macro_f1'))}, chance {fmt(s2r.get('chance'))} (classifier {s2r.get('headline', '?')}).")
    methods = s2r.get("methods") or {}
    if not methods:
        return head
    rows = [[name, fmt(m.get("accuracy")), fmt(m.get("macro_f1"))] for name, m in methods.items()]
    return head + "\n\n" + markdown_table(["classifier", "accuracy", "macro-F1"], rows)


def _rel(path: str, report: dict) -> str:
    out = report.get("out")
    if out:
        try:
            return str(Path(path).resolve().relative_to(Path(out).resolve()))
        except ValueError:
            pass
    return str(path)


def ablation_markdown(report: dict) -> str:
    runs = report["runs"]
    ds = report["dataset"]
    seeds = _several_seeds(runs)
    rows = [[r["name"], r.get("description", ""), *([f"{r['label_fraction']:g}"] if len(report.get("label_fractions") or [1]) > 1 else []),
             *(fmt(r[m], r.get(f"{m}_ci")) for m in METRICS), f"{r['train_seconds']:.0f}"] for r in runs]
    fractions = report.get("label_fractions") or [report.get("label_fraction", 1.0)]
    lines = [
        f"# {report.get('title', 'GalaxAlign ablations')}" + (" (quick)" if report.get("quick") else ""),
        "",
        f"Data: `{_data_name(ds)}`" + (f" (galaxalign cache; {ds.get('num')} galaxies, {ds.get('size')} px)" if ds.get("source") == "survey" else "")
        + f", label fraction {', '.join(f'{f:g}' for f in fractions)}, "
        f"backbone {report['backbone']}. Every run has GalaxAlign's training budget; 95 % bootstrap intervals "
        "over test galaxies.",
        "",
        markdown_table(["ablation", "what", *(["label fraction"] if len(fractions) > 1 else []), *METRIC_HEADERS, "train s"], rows),
        "",
        "## All classifiers (accuracy)",
        "",
        _classifier_table(runs),
        "",
    ]
    lines += feature_search_section(report)
    comparison = report.get("comparison") or {}
    if comparison:
        lines += [f"## Effect of each change (accuracy, mAP; minus = worse than `{report.get('reference')}`; "
                  "paired 95 % bootstrap intervals over the same test galaxies)", ""]
        for key, comp in comparison.items():
            if len(comparison) > 1 or seeds:
                lines.append(f"Label fraction {key}:")
            for name, per in comp["vs"].items():
                parts = []
                for metric in ("accuracy", "map"):
                    if metric in per:
                        d, (lo, hi) = -per[metric]["difference"], per[metric]["ci"]
                        parts.append(f"{metric} {d:+.3f} [{-hi:+.3f}, {-lo:+.3f}]")
                lines.append(f"- {name}: " + ", ".join(parts))
            lines.append("")
    return "\n".join(lines) + "\n"
