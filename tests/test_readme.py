"""The README's walk-through, run exactly as written, in a fresh folder, against real
Prefect, DuckDB and MLflow (the commands a user copies)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- walkthrough:begin -->")[1].split("<!-- walkthrough:end -->")[0]
    return block.strip().removeprefix("```bash").removesuffix("```").strip()


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path, cli_environment, figures):
    script = "set -euo pipefail\n" + walkthrough() + "\n"
    env = {**cli_environment, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cli_environment.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout
    # 1: the second budget computes only the new draws (demo: 500 points, 501 fits a chain)
    assert "5,010 of them computed now" in out
    # 2: the new networks fit nothing
    assert out.count("0 of them computed now") >= 2
    # 3: curate picks the model by its columns and says which
    assert re.search(r"scored 300 rows with models:/amortval-loans/1 .*the store's model for these columns", out)
    assert re.search(r"scored 300 rows with models:/amortval-demo/\d+", out)
    # 4: the stored network under another name; 6: the moved store still curates
    assert "models:/demo-production/1" in out
    assert (tmp_path / "moved-store" / "curated" / "new.curated.parquet").exists()
    assert not (tmp_path / "amortval-store").exists()
    figures("README walk-through", f"{script.count(chr(10)) - 1} commands, exit 0")


@pytest.mark.slow
def test_the_readme_anytime_block_runs_as_written(tmp_path, cli_environment):
    """Each rule of the README's anytime block stops for its own reason, and a stricter or
    longer run goes on from the stored draws."""
    from readme_blocks import readme_commands

    env = {**cli_environment, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cli_environment.get('PATH', '')}"}
    outputs = []
    for command in readme_commands("anytime"):
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        outputs.append(done.stdout + done.stderr)
    default, stricter, timed, stable, ruled, fixed = outputs
    assert re.search(r"estimated error\s+nMSE [\d.]+ ± [\d.e+-]+ at \d+ samples per point, \d+ rounds: ", default)
    assert "round 1: 2 samples per point" in default and "round 2: 4 samples per point" in default
    assert "0 to compute" in stricter  # its first rounds are the default run's stored draws
    assert re.search(r"stopping: (estimated error .* <= target 0.15|cap of 100 samples per point reached)", stricter)
    assert re.search(r"stopping: (time budget 45 s|estimated error|cap of 50)", timed)
    assert re.search(r"stopping: (the lowest 10% kept \d+% of its rows|cap of 50)", stable)
    assert re.search(r"stopping: .*(and|time budget 60 s|cap of 50)", ruled)
    assert "round 1: 20 samples per point" in fixed and "no stopping rule: one round" in fixed


def test_the_readme_python_block_runs_as_written(tmp_path, cli_environment):
    """The README's Python block, unchanged, in a folder with the demo's rows as the files it
    names (the demo's own label column, its flip marks dropped so they are not a feature);
    then what it built is checked from the same interpreter."""
    import polars as pl
    from readme_blocks import readme_block

    from amortval.data.demo import make_demo

    demo, other = make_demo(seed=0), make_demo(seed=1)
    for name, frame in (("train", demo.train), ("valid", demo.valid), ("test", other.valid), ("new", demo.new)):
        frame.drop("flipped").write_parquet(tmp_path / f"{name}.parquet")
    checks = """
import json
print("CHECKS " + json.dumps({
    "rows": result.values.height, "lowest": result.lowest(10).height, "rounds": len(result.rounds),
    "stop_reason": result.stop_reason, "strict_reason": strict.stop_reason,
    "samples": [int(r.values["samples"].sum()) for r in (result, strict, both)],
    "figures": [type(f).__name__ for f in (result.plot(), result.plot(test="test.parquet"))],
    "model_uri": result.model_uri, "loaded": amortval.load(result.run_id).run_id == result.run_id,
    "kept": amortval.curate("new.parquet", drop_fraction=0.1).kept.height,
}))
"""
    env = {**cli_environment, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cli_environment.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-c", readme_block("python") + checks], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    import json

    got = json.loads(done.stdout.split("CHECKS ", 1)[1])
    assert got["rows"] == 500 and got["lowest"] == 10 and got["rounds"] >= 1
    assert got["stop_reason"] and got["strict_reason"]
    first, strict, both = got["samples"]
    assert both == first + strict, "merged per-row sample counts add"
    assert got["figures"] == ["Figure", "tuple"], "plot(test=) adds the point-removal figure"
    assert got["model_uri"].startswith("models:/amortval-train/")
    assert got["loaded"] and got["kept"] == 270, "drop_fraction 0.1 of 300 new rows keeps 270"
    assert pl.read_parquet(tmp_path / "new.parquet").height == 300
