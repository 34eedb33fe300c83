"""REPORT.md: the family-comparison tables for every dataset, then provenance."""

from __future__ import annotations

from pathlib import Path

from benchmark.report.tables import FAMILY_ORDER, summary_table

SETS = {
    "recon/": "Reconstruction of held-out test images",
    "gen/": "Generated samples (prior decodes vs their reconstructions)",
}


def _family_rank(model: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(model) if model in FAMILY_ORDER else len(FAMILY_ORDER), model)


def write_report(records: list[dict], out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: (r["dataset"], _family_rank(r["model"]), r["seed"]))
    lines = ["# vaebench report", ""]
    suites = sorted({r["suite"] for r in records})
    lines += [
        f"Suites: {', '.join(suites)}. Cells: {len(records)} "
        f"({sum(r['status'] == 'ok' for r in records)} ok). Cells are `mean ± sample std "
        "(n seeds)`; — means the metric does not apply to the family, n/a that it could "
        "not be computed (see the notes). Decoder outputs are clamped to [0, 1] before "
        "SSIM, GMSD, LPIPS and BCE.",
        "",
    ]
    for dataset in sorted({r["dataset"] for r in records}):
        for prefix, title in SETS.items():
            table = summary_table(records, dataset, prefix)
            if table.empty:
                continue
            lines += [f"## {dataset}: {title} (`{prefix}`)", "", table.to_markdown(), ""]
    lines += [
        "`recon_loss` and `total_loss` are each family's own training objective, on "
        "family-specific scales: shown, never ranked. A low `discriminator_loss` means "
        "VAEGAN's discriminator is winning, not that the model is better.",
        "",
    ]
    notes = sorted(
        {
            f"{r['model']}: {key}: {why}"
            for r in records
            for key, why in r.get("unavailable", {}).items()
        }
    )
    if notes:
        lines += ["## Unavailable metrics", "", *[f"- {n}" for n in notes], ""]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += ["## Failed cells", ""]
        lines += [
            f"- {r['dataset']} / {r['model']} / seed {r['seed']}: {r['error']}" for r in failed
        ]
        lines += [""]
    lines += [
        "## Provenance",
        "",
        "| cell | config hash | dataset source | revision / fingerprint "
        "| git sha | device | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        info, env = r.get("dataset_info", {}), r.get("environment", {})
        lines.append(
            f"| {r['dataset']}-{r['model']}-seed{r['seed']} | {r['config_hash']} | "
            f"{info.get('source', '?')} | {info.get('revision') or '-'} / "
            f"{info.get('fingerprint', '-')} | {(env.get('git_sha') or '-')[:12]} | "
            f"{env.get('device', '-')} | {r['timings'].get('total', float('nan')):.1f} |"
        )
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path
