#!/bin/sh
# Regenerate README's figures and its regimes.md excerpt from fresh sweeps (about six minutes):
#
#     docs/make_figures.sh          # with .venv/bin/python when it exists, else python3; PYTHON=... to choose
#
# It runs, in a temporary folder (the project's mlruns/ and sweeps/ are not touched), the default main job
# `+sweep=lr`, `+sweep=regimes` with a learning-rate range test, `+sweep=eos` and `+sweep=landscape`, writes
# their reports there and copies into docs/: the main job's loss_curves.png and final_loss_vs_lr.png as
# lr_loss_curves.png and lr_final_loss_vs_lr.png; the regimes sweep's loss_curves.png, final_loss_vs_lr.png and
# regimes.md; the edge-of-stability sweep's sharpness.png as eos_sharpness.png; the landscape sweep's
# loss_landscape.png, loss_landscape.gif and cost.png; and, where Chromium is installed, ui_regimes.png: the
# MLflow UI opened on the regimes sweep's comparison, as `python -m gdexp.ui` prints it.
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

"$PYTHON" -m gdexp +sweep=lr
"$PYTHON" -m gdexp.report lr --no-log
cp sweeps/lr/report/loss_curves.png "$docs/lr_loss_curves.png"
cp sweeps/lr/report/final_loss_vs_lr.png "$docs/lr_final_loss_vs_lr.png"

"$PYTHON" -m gdexp +sweep=regimes
"$PYTHON" -m gdexp +sweep=lr_range train.progress=false
"$PYTHON" -m gdexp.report regimes --no-log
report=sweeps/regimes/report
cp "$report/loss_curves.png" "$report/final_loss_vs_lr.png" "$report/regimes.md" "$docs/"

if command -v chromium >/dev/null; then
    "$PYTHON" -m gdexp.ui --port 0 --sweep regimes > ui.log 2>&1 &
    ui=$!
    for _ in $(seq 120); do grep -q "^The trials by regime: " ui.log && break; sleep 1; done
    address=$(sed -n 's/^The trials by regime: //p' ui.log)
    chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --window-size=2400,1300 --virtual-time-budget=15000 \
        --user-data-dir="$work/chromium" --screenshot="$docs/ui_regimes.png" "$address" 2>/dev/null
    kill "$ui"  # SIGTERM: a background job of a script ignores SIGINT
    wait "$ui" || true
fi

"$PYTHON" -m gdexp +sweep=eos
"$PYTHON" -m gdexp.report eos --no-log
cp sweeps/eos/report/sharpness.png "$docs/eos_sharpness.png"

"$PYTHON" -m gdexp +sweep=landscape
"$PYTHON" -m gdexp.report landscape --no-log
landscape=sweeps/landscape/report
cp "$landscape/loss_landscape.png" "$landscape/loss_landscape.gif" "$landscape/cost.png" "$docs/"
echo "docs/ written from $work"
