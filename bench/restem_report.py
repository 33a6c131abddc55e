"""Render a ReST-EM training report (results/policy/report.json) as the Markdown table in docs/RESULTS.md.

Usage: python bench/restem_report.py results/policy/report.json > results/policy/report.md
"""

import json
import sys

BASELINES = {"passage": "a LoRA on the passage alone (same seeds)", "base": "the model without an adapter"}


def main(path: str) -> None:
    report = json.loads(open(path).read())
    cfg = report["config"]
    print(f"ReST-EM: n={len(report['passages'])} SQuAD training passages (outside the eval split), "
          f"k={cfg['k']}, s={cfg['seeds']}, R={cfg['rounds']}, format {report['format']}, "
          f"inner loop r{report['inner_train']['rank']}/{report['inner_train']['epochs']} epochs, "
          f"{report['eval_max_tokens']}-token answers, rewards against "
          f"{BASELINES[cfg.get('reward_baseline', 'base')]}\n")
    print("| Round | Policy sampling | No adapter | Reward baseline | Mean gain, all sampled edits | Kept | Mean gain, kept | "
          "Usable/sampled | Policy SFT loss | Wall time |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in report["rounds"]:
        policy = "base model" if r["round"] == 1 else f"round-{r['round'] - 1} policy"
        sft = r.get("sft") or {}
        loss = f"{sft.get('first_loss', float('nan')):.2f} → {sft.get('final_loss', float('nan')):.2f}"
        no_adapter = r.get("no_adapter_accuracy", r["baseline_accuracy"])  # reports before the passage baseline
        print(f"| {r['round']} | {policy} | {100 * no_adapter:.1f}% | {100 * r['baseline_accuracy']:.1f}% | "
              f"{100 * r['mean_gain_all_edits']:+.1f} pts | {r['kept']}/{r['passages']} | "
              f"{100 * r['mean_gain_kept']:+.1f} pts | {r['usable_edits']}/{r['sampled_edits']} | {loss} | "
              f"{r['seconds']:.0f} s |")


if __name__ == "__main__":
    main(sys.argv[1])
