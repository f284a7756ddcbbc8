#!/bin/sh
# Regenerate README's figures and its regimes.md excerpt from a fresh `+sweep=regimes`, `+sweep=eos` and
# `+sweep=landscape` (about five minutes):
#
#     docs/make_figures.sh          # with .venv/bin/python when it exists, else python3; PYTHON=... to choose
#
# It runs the sweep and a learning-rate range test in a temporary folder (the project's mlruns/ and sweeps/
# are not touched), writes the reports there, and copies loss_curves.png, final_loss_vs_lr.png and
# regimes.md into docs/, the edge-of-stability sweep's sharpness.png as docs/eos_sharpness.png, and the landscape
# sweep's loss_landscape.png, loss_landscape.gif and cost.png.
set -eu
docs=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$docs")
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/gdexp-docs-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
export MPLBACKEND=Agg PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -m gdexp +sweep=regimes
"$PYTHON" -m gdexp +sweep=lr_range train.progress=false
"$PYTHON" -m gdexp.report regimes --no-log
report=sweeps/regimes/report
cp "$report/loss_curves.png" "$report/final_loss_vs_lr.png" "$report/regimes.md" "$docs/"
"$PYTHON" -m gdexp +sweep=eos
"$PYTHON" -m gdexp.report eos --no-log
cp sweeps/eos/report/sharpness.png "$docs/eos_sharpness.png"
"$PYTHON" -m gdexp +sweep=landscape
"$PYTHON" -m gdexp.report landscape --no-log
landscape=sweeps/landscape/report
cp "$landscape/loss_landscape.png" "$landscape/loss_landscape.gif" "$landscape/cost.png" "$docs/"
echo "docs/loss_curves.png, final_loss_vs_lr.png, regimes.md, eos_sharpness.png, loss_landscape.png," \
     "loss_landscape.gif and cost.png written from $work"
