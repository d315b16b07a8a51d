"""WikiText-2 test perplexity of the embedded SmolLM2-135M: dense vs uniform vs WeLore ranks (Table 1 analogue).

Every layer at its planned rank (`--all-layers`, the paper's compression tables), weight SVD; the same
token budget and windows for every point, recorded in the run registry. Writes docs/ppl_table.md.

    .venv/bin/python bench/bench_ppl.py [--errs 10,20,30,40,50] [--tokens 16384] [--seqlen 1024] [--act-svd]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import welore_core as wc
from welore_core.compression.apply import CompressionConfig
from welore_core.compression.spectra import Calibration
from welore_core.evaluation import EvalConfig, perplexity_sweep

ROOT = Path(__file__).resolve().parent.parent


def main(errs: list[float], tokens: int, seqlen: int, act_svd: bool) -> None:
    calib = Calibration(str(wc.data_dir() / "tinyshakespeare" / "input.txt")) if act_svd else None
    df = perplexity_sweep(None, errs, ["uniform", "welore"], EvalConfig(seqlen=seqlen, tokens=tokens),
               CompressionConfig(mode="all", act_svd=act_svd), calib=calib)
    dense = float(df.loc[df.strategy == "dense", "ppl"].iloc[0])
    table = df[df.strategy != "dense"].pivot(index="target_err", columns="strategy", values="ppl")
    params = df[df.strategy == "welore"].set_index("target_err")["params"]
    label = "+ActSVD" if act_svd else ""
    lines = [f"| ERR % | uniform{label} PPL | WeLore{label} PPL | uniform / WeLore | WeLore params |",
             "|---:|---:|---:|---:|---:|", f"| 0 (dense) | {dense:.2f} | {dense:.2f} | 1.00 | {df.params.iloc[0] / 1e6:.1f} M |"]
    for err, row in table.iterrows():
        lines.append(f"| {err:g} | {row['uniform']:.2f} | {row['welore']:.2f} | {row['uniform'] / row['welore']:.2f}× "
                     f"| {params[err] / 1e6:.1f} M |")
    text = "\n".join(lines)
    print(df.to_string(index=False))
    print()
    print(text)
    note = (f"\nWikiText-2 test, first {tokens} tokens in windows of {seqlen}, every layer at its rank "
            f"({'activation-whitened' if act_svd else 'weight'} SVD), SmolLM2-135M-Instruct (dequantised Q4_1).\n"
            f"Command: `.venv/bin/python bench/bench_ppl.py --errs {','.join(f'{e:g}' for e in errs)} "
            f"--tokens {tokens} --seqlen {seqlen}{' --act-svd' if act_svd else ''}`\n")
    out = ROOT / "docs" / f"ppl_table{'_actsvd' if act_svd else ''}.md"
    out.write_text(text + "\n" + note)
    print(f"written {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errs", default="10,20,30,40,50")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--seqlen", type=int, default=1024)
    parser.add_argument("--act-svd", action="store_true")
    a = parser.parse_args()
    main([float(e) for e in a.errs.split(",")], a.tokens, a.seqlen, a.act_svd)
